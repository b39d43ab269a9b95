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


def test_nonfinite_losses_on_one_rank_stop_both_ranks_at_the_same_step_with_exit_code_1(tmp_path, tmp_path_factory):
    """Issue 21: rank 1's loss is NaN at steps 2-4 (0-based 1-3), rank 0's stays finite. The ranks agree that each
    of those steps is not finite (one all-reduce), so both skip them, both stop at the limit of 2 with the same one
    line, and the launch ends with exit code 1 and no export. A rank that decided alone would hang the other."""
    out = tmp_path / "run"
    config = helpers.reference_config(
        helpers.shared_shards(tmp_path_factory), out, train={"max_nonfinite_in_row": 2, "max_steps": 6}
    )
    path = helpers.write_config(tmp_path / "config.yaml", config)
    env = helpers.launch_env("accelerate", LEAD_DIST_TEST_NAN_AT_STEPS="1,2,3", LEAD_DIST_TEST_NAN_RANK="1")
    result = subprocess.run(helpers.command("accelerate", path), env=env, capture_output=True, text=True,
                            timeout=300, cwd=helpers.REPO)  # fmt: skip

    assert helpers.run_info(out)["world_size"] == 2
    assert result.returncode == 1, result.stderr[-4000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lead-dist train: error:")]
    expected = (
        "lead-dist train: error: non-finite loss in 2 steps in a row (steps 2-3; train.max_nonfinite_in_row=2); "
        "first non-finite at step 2: total (every term finite, their weighted sum not); stopped, nothing exported"
    )
    assert len(errors) == 2 and all(line.startswith(expected) for line in errors), result.stderr[-4000:]
    assert "lead_dist/train" not in result.stderr  # no traceback of ours (accelerate prints its own for exit code 1)
    assert [r["step"] for r in helpers.step_records(out)] == [1, 2, 3]
    assert not (out / "export").exists()
