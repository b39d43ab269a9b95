"""One rank stops responding: the other exits with a clear error within train.rank_timeout_s instead of hanging.

Rank 1 freezes at step 2 (a test hook: it sleeps outside any collective, like a rank stuck in I/O). Rank 0 waits
in the step's gather until the process-group timeout; rank 1's watchdog sees no progress for the same time. The
launch must end, non-zero, with a message that names the timeout setting, long before the test's own limit.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import test_train_loop_helpers as helpers

pytestmark = pytest.mark.multiprocess

RANK_TIMEOUT_S = 6


def test_a_stuck_rank_ends_the_run_with_a_clear_error(tmp_path, tmp_path_factory):
    out = tmp_path / "run"
    config = helpers.reference_config(
        helpers.shared_shards(tmp_path_factory), out, train={"rank_timeout_s": RANK_TIMEOUT_S}
    )
    path = helpers.write_config(tmp_path / "config.yaml", config)
    process = helpers.start("accelerate", path, LEAD_DIST_TEST_HANG_RANK="1:2")
    # Measure from the moment training is under way (step 2 logged by rank 0 means both ranks got going).
    helpers.wait_for(
        lambda: (out / "log.jsonl").is_file() and len(helpers.step_records(out)) >= 2, process, what="step 2"
    )
    started = time.monotonic()
    try:
        output, _ = process.communicate(timeout=RANK_TIMEOUT_S + 60)
    except subprocess.TimeoutExpired:
        helpers.kill_tree(process)
        pytest.fail(f"the run still hangs {RANK_TIMEOUT_S + 60} s after a rank froze")
    elapsed = time.monotonic() - started

    assert helpers.run_info(out)["world_size"] == 2
    assert process.returncode != 0
    assert elapsed < RANK_TIMEOUT_S + 60
    assert "train.rank_timeout_s=6" in output, output[-6000:]
    assert "another rank" in output
    assert [r["step"] for r in helpers.step_records(out)] == [1, 2], "no step completes after the freeze"
