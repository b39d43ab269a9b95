"""kill -9 a 2-process run between two checkpoints, resume it, kill -9 the resumed run in the middle of a checkpoint
write, resume again: the student and teacher in the end equal an uninterrupted run's, bit for bit, and so do the
per-step losses.

Dropout is on, so each resume must also restore every rank's RNG; the layer draw is resampled every 2 steps, so it
must continue from the step; the stream must continue mid-epoch from its cursor.
"""

from __future__ import annotations

import pytest
import test_train_loop_helpers as helpers
import torch

from lead_dist.train import checkpoint

pytestmark = pytest.mark.multiprocess

STEPS = 8


def _config(tmp_path_factory, output_dir):
    return helpers.tiny_config(
        helpers.shared_shards(tmp_path_factory),
        output_dir,
        helpers.minilm_tokenizer(),
        dropout=0.1,
        train={"max_steps": STEPS, "save_every": 2, "keep_last": 2},
    )


def _assert_same_models(resumed, reference):
    for role in ("student", "teacher"):
        expected, got = helpers.exported_weights(reference, role), helpers.exported_weights(resumed, role)
        assert got.keys() == expected.keys()
        for name, tensor in expected.items():
            torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=f"{role} {name}")


def _last_logged_step(output_dir):
    if not (output_dir / "log.jsonl").is_file():
        return 0
    return max((r["step"] for r in helpers.step_records(output_dir)), default=0)


def test_kill_mid_run_and_mid_checkpoint_then_resume_latest(tmp_path, tmp_path_factory):
    reference = tmp_path / "uninterrupted"
    helpers.launch(
        "accelerate", helpers.write_config(tmp_path / "reference.yaml", _config(tmp_path_factory, reference))
    )

    out = tmp_path / "run"
    config = helpers.write_config(tmp_path / "config.yaml", _config(tmp_path_factory, out))

    # 1. kill -9 between checkpoints: step 5 is logged, checkpoint 4 is the newest committed one.
    process = helpers.start("accelerate", config, LEAD_DIST_TEST_STEP_SLEEP="0.3")
    helpers.wait_for(lambda: _last_logged_step(out) >= 5, process, what="step 5")
    helpers.kill_tree(process)
    assert checkpoint.latest(out).name == "step-000004"
    assert not (out / "export").exists()

    # 2. resume, and kill -9 again while checkpoint 6 is being written (every file there, not committed yet).
    process = helpers.start("accelerate", config, "--resume", "latest", LEAD_DIST_TEST_SLEEP_IN_SAVE="6:120")
    temp_dir = out / "ckpt-000006.tmp-6"
    helpers.wait_for(
        lambda: (temp_dir / "train_state.json").is_file() and len(list(temp_dir.glob("rng-rank*.pt"))) == 2,
        process,
        what="the write of checkpoint 6",
    )
    helpers.kill_tree(process)
    assert temp_dir.is_dir() and not (out / "step-000006").exists()
    assert checkpoint.latest(out).name == "step-000004", "a torn write never looks like a checkpoint"

    # 3. resume to the end.
    helpers.launch("accelerate", config, "--resume", "latest")
    info = helpers.run_info(out)
    assert info["world_size"] == 2 and info["resumed_from"].endswith("step-000004")
    assert not temp_dir.exists(), "the torn temp directory is cleaned at start-up"
    assert [p.name for _, p in checkpoint.list_checkpoints(out)] == ["step-000006", "step-000008"]
    _assert_same_models(out, reference)
    # The log continues across both kills without duplicates: the same losses step by step.
    assert [r["step"] for r in helpers.step_records(out)] == list(range(1, STEPS + 1))
    assert all(r["world_size"] == 2 for r in helpers.step_records(out))
    assert helpers.losses(out) == pytest.approx(helpers.losses(reference), abs=1e-6)
