"""output_dir belongs to one run (issue 15, section 2 items 2, 3 and 8), shown with real `lead-dist train` processes:

- a fresh run into a used output_dir is refused (rc 2, the earlier run untouched); `--overwrite` clears it first;
- a second training into the folder of a running one is refused while the first finishes intact;
- a run killed with -9 leaves its lock behind; the next run on this host finds it stale and takes over;
- a flipped byte in the newest checkpoint: `--resume latest` falls back to the previous checkpoint and says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import test_train_loop_helpers as helpers

from lead_dist.lockfile import LOCK_NAME

pytestmark = pytest.mark.multiprocess


def _config(tmp_path: Path, tmp_path_factory, out: Path, **train: int) -> Path:
    settings = {"max_steps": 4, "save_every": 2, "keep_last": 2, **train}
    config = helpers.tiny_config(
        helpers.shared_shards(tmp_path_factory), out, helpers.minilm_tokenizer(), train=settings
    )
    return helpers.write_config(tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml", config)


def _train(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        helpers.command("single", config, *args), env=helpers.launch_env("single", **env), capture_output=True,
        text=True, timeout=300, cwd=helpers.REPO,
    )  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_fresh_run_into_a_used_output_dir_is_refused_and_overwrite_starts_over(tmp_path, tmp_path_factory):
    out = tmp_path / "run"
    config = _config(tmp_path, tmp_path_factory, out)
    first = _train(config, "--resume", "latest")  # nothing to resume yet: a fresh start, said so
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"no checkpoint in {out}: starting fresh" in first.stderr
    before = _snapshot(out)
    assert "log.jsonl" in before and "step-000004/COMPLETE" in before and LOCK_NAME not in before

    refused = _train(config)
    assert refused.returncode == 2, refused.stderr[-3000:]
    error_lines = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and f"output_dir {out} is not empty" in error_lines[0], refused.stderr[-3000:]
    assert "--resume latest" in error_lines[0] and "--overwrite" in error_lines[0]
    assert "Traceback" not in refused.stderr
    assert _snapshot(out) == before, "the refused run changed the earlier run's files"

    (out / "notes.txt").write_text("an older file the overwrite must delete")
    again = _train(config, "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (out / "notes.txt").exists() and not (out / LOCK_NAME).exists()
    assert [r["step"] for r in helpers.step_records(out)] == [1, 2, 3, 4]
    assert sorted(p.name for p in out.glob("step-*")) == ["step-000002", "step-000004"]

    both = _train(config, "--resume", "latest", "--overwrite")
    assert both.returncode == 2 and "contradict" in both.stderr


def test_a_second_training_into_a_running_ones_folder_is_refused(tmp_path, tmp_path_factory):
    out = tmp_path / "run"
    config = _config(tmp_path, tmp_path_factory, out, max_steps=6)
    hold = tmp_path / "hold"  # the first run waits after each step while this file exists
    hold.touch()
    first = helpers.start("single", config, LEAD_DIST_TEST_HOLD_WHILE=str(hold))
    try:
        helpers.wait_for(lambda: (out / "log.jsonl").is_file() and helpers.step_records(out), first, what="step 1")
        owner = json.loads((out / LOCK_NAME).read_text())
        assert owner["pid"] == first.pid and owner["host"]
        second = _train(config, "--overwrite")  # the most destructive request: the lock must still win
        assert first.poll() is None, "the first run must still be running when the second is refused"
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"in use by lead-dist train (output_dir {out}) (pid {first.pid}" in second.stderr
        hold.unlink()
        output, _ = first.communicate(timeout=300)
    finally:
        helpers.kill_tree(first)
    assert first.returncode == 0, output[-3000:]
    assert [r["step"] for r in helpers.step_records(out)] == [1, 2, 3, 4, 5, 6]
    assert (out / "export" / "student").is_dir() and not (out / LOCK_NAME).exists()


def test_a_killed_runs_lock_is_stale_and_a_damaged_checkpoint_is_passed_over(tmp_path, tmp_path_factory):
    out = tmp_path / "run"
    config = _config(tmp_path, tmp_path_factory, out, max_steps=8)
    first = helpers.start("single", config, LEAD_DIST_TEST_STEP_SLEEP="1.5")
    try:
        helpers.wait_for(lambda: (out / "step-000004" / "COMPLETE").is_file(), first, what="checkpoint 4")
    finally:
        helpers.kill_tree(first)  # kill -9: no handler or atexit runs
        first.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid  # left behind by kill -9

    # Flip 4 bytes in the middle of the newest checkpoint's student weights (the size stays the same).
    weights = out / "step-000004" / "student.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    weights.write_bytes(bytes(data))

    resumed = _train(config, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"removed the stale lock of lead-dist train (output_dir {out}) (pid {first.pid}" in resumed.stderr
    assert f"--resume latest: skipping step 4: {weights}: sha256 differs" in resumed.stderr
    assert helpers.run_info(out)["resumed_from"] == str(out / "step-000002")
    assert not (out / LOCK_NAME).exists()


def test_resume_from_a_named_damaged_checkpoint_is_refused(tmp_path):
    from lead_dist.train import checkpoint

    with checkpoint.atomic_checkpoint_dir(tmp_path, 3) as tmp:
        (tmp / "weights.bin").write_bytes(bytes(range(256)))
    path = tmp_path / "step-000003"
    assert checkpoint.damaged_file(path) is None
    data = bytearray((path / "weights.bin").read_bytes())
    data[7] ^= 1
    (path / "weights.bin").write_bytes(bytes(data))
    assert checkpoint.is_complete(path)  # same size: only the checksum can tell
    assert (
        checkpoint.damaged_file(path)
        == f"{path / 'weights.bin'}: sha256 differs from the one recorded in COMPLETE (the file is damaged)"
    )
    with pytest.raises(ValueError, match=r"no usable checkpoint in .* \(step 3: .*weights.bin: sha256 differs"):
        checkpoint.resolve_resume(tmp_path, "latest")  # issue 21: not a fresh start over the run's results
    with pytest.raises(FileNotFoundError, match="sha256 differs"):
        checkpoint.resolve_resume(tmp_path, str(path))


def test_a_checkpoint_without_checksums_still_loads(tmp_path):
    """Checkpoints written before the checksums record bare sizes: still complete, nothing to compare."""
    from lead_dist.train import checkpoint

    path = tmp_path / "step-000001"
    path.mkdir()
    (path / "a.bin").write_bytes(b"abc")
    (path / "COMPLETE").write_text(json.dumps({"step": 1, "files": {"a.bin": 3}}))
    assert checkpoint.is_complete(path) and checkpoint.damaged_file(path) is None
    assert checkpoint.resolve_resume(tmp_path, "latest") == path


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
