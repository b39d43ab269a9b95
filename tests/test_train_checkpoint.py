"""Checkpoints: atomicity under SIGKILL, keep-last-N, RNG and optimizer round trips, strict loading."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from lead_dist.train import checkpoint as ck
from lead_dist.train import resume as contents

REPO = Path(__file__).resolve().parents[1]


def _write_payload(tmp: Path, step: int) -> None:
    """A small checkpoint whose bytes say which step wrote it (a file at top level and one in a subfolder)."""
    (tmp / "weights.bin").write_bytes(bytes([step]) * 1000)
    (tmp / "sub").mkdir(exist_ok=True)
    (tmp / "sub" / "shard.bin").write_bytes(bytes([step]) * 100)


def _assert_payload(path: Path, step: int) -> None:
    assert (path / "weights.bin").read_bytes() == bytes([step]) * 1000
    assert (path / "sub" / "shard.bin").read_bytes() == bytes([step]) * 100


# The child writes step 2 over an output dir that already holds a complete step 1, and dies by SIGKILL at the
# point named by argv[2]: the n-th fsync of the commit, the rename, right after the rename, or in the middle of
# the writer (there the parent sends the SIGKILL once the child says it is half-way).
_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from lead_dist.train import checkpoint as ck

    out, point = Path(sys.argv[1]), sys.argv[2]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_fsync, real_rename = os.fsync, os.rename
    calls = {"fsync": 0}
    if point.startswith("fsync"):
        def fsync(fd):
            calls["fsync"] += 1
            if calls["fsync"] == int(point[5:]):
                die()
            real_fsync(fd)
        os.fsync = fsync
    elif point == "before_rename":
        os.rename = lambda a, b: die()
    elif point == "after_rename":
        def rename(a, b):
            real_rename(a, b)
            die()
        os.rename = rename

    with ck.atomic_checkpoint_dir(out, 2) as tmp:
        (tmp / "weights.bin").write_bytes(bytes([2]) * 500)
        if point == "mid_write":
            print("half-way", flush=True)
            time.sleep(120)
        with open(tmp / "weights.bin", "ab") as handle:
            handle.write(bytes([2]) * 500)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "shard.bin").write_bytes(bytes([2]) * 100)
    print("finished", flush=True)
    """
)

# Commit order for this payload: fsync weights.bin, sub/shard.bin, sub/, tmp/ (1-4), COMPLETE (5), tmp/ again (6),
# rename, output_dir (7). Points 1-6 and the rename come before the checkpoint exists; 7 and after come after.
_BEFORE_COMMIT = ["mid_write", "fsync1", "fsync4", "fsync5", "fsync6", "before_rename"]
_AFTER_COMMIT = ["after_rename", "fsync7"]


def _run_child_until_killed(out: Path, point: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(out), point], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    if point == "mid_write":
        line = proc.stdout.readline().decode()
        assert line.strip() == "half-way", proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"child was not killed at {point}: rc={proc.returncode} {stderr!r}"


@pytest.mark.parametrize("point", _BEFORE_COMMIT + _AFTER_COMMIT)
def test_sigkill_during_save_never_leaves_a_checkpoint_that_looks_complete(tmp_path: Path, point: str) -> None:
    out = tmp_path / "run"
    with ck.atomic_checkpoint_dir(out, 1) as tmp:
        _write_payload(tmp, 1)
    _run_child_until_killed(out, point)

    expected_step = 1 if point in _BEFORE_COMMIT else 2
    assert [step for step, _ in ck.list_checkpoints(out)] == sorted({1, expected_step})
    newest = ck.latest(out)
    assert newest == out / ck.checkpoint_name(expected_step)
    _assert_payload(newest, expected_step)
    _assert_payload(out / "step-000001", 1)  # the previous checkpoint is intact either way

    leftovers = [p.name for p in out.iterdir() if not ck.is_complete(p)]
    assert (len(leftovers) == 1) == (point in _BEFORE_COMMIT), leftovers
    removed = ck.clean_incomplete(out)
    assert sorted(p.name for p in removed) == sorted(leftovers)
    assert sorted(p.name for p in out.iterdir()) == sorted(ck.checkpoint_name(s) for s in {1, expected_step})


def test_damaged_or_unmarked_step_dirs_are_not_checkpoints(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        with ck.atomic_checkpoint_dir(tmp_path, step) as tmp:
            _write_payload(tmp, step)
    # step 3 loses bytes after the commit (a torn copy); a step-4 dir appears without COMPLETE
    with open(tmp_path / "step-000003" / "weights.bin", "r+b") as handle:
        handle.truncate(10)
    (tmp_path / "step-000004").mkdir()
    _write_payload(tmp_path / "step-000004", 4)
    # step 5 has a COMPLETE marker that names another step (a renamed copy)
    with ck.atomic_checkpoint_dir(tmp_path, 5) as tmp:
        _write_payload(tmp, 5)
    (tmp_path / "step-000005").rename(tmp_path / "step-000006")

    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [1, 2]
    assert ck.latest(tmp_path) == tmp_path / "step-000002"
    assert ck.resolve_resume(tmp_path, "latest") == tmp_path / "step-000002"
    with pytest.raises(FileNotFoundError, match="step-000003.*not a complete checkpoint"):
        ck.resolve_resume(tmp_path, str(tmp_path / "step-000003"))


def test_keep_last_keeps_the_newest_n_and_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40, 50):
        with ck.atomic_checkpoint_dir(tmp_path, step) as tmp:
            (tmp / "value.txt").write_text(str(step))
    (tmp_path / "ckpt-000060.tmp-dead").mkdir()  # a killed save's leftovers
    removed = ck.keep_last(tmp_path, 2)
    assert sorted(p.name for p in removed) == ["ckpt-000060.tmp-dead", "step-000010", "step-000020", "step-000030"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000040", "step-000050"]

    with ck.atomic_checkpoint_dir(tmp_path, 50) as tmp:
        (tmp / "value.txt").write_text("again")
    assert (ck.latest(tmp_path) / "value.txt").read_text() == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000040", "step-000050"]
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        ck.keep_last(tmp_path, 0)


def test_writer_error_commits_nothing_and_removes_the_temp_dir(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="disk full"):
        with ck.atomic_checkpoint_dir(tmp_path, 7) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("disk full")
    assert ck.latest(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_non_main_rank_writes_into_the_shared_temp_dir_without_committing(tmp_path: Path) -> None:
    # rank 1 and rank 0 use the same token; rank 1 leaves first (it must not rename), rank 0 commits both shards
    with ck.atomic_checkpoint_dir(tmp_path, 3, is_main=False, token="run1") as tmp_rank1:
        (tmp_rank1 / "shard-1.bin").write_bytes(b"1")
    assert ck.latest(tmp_path) is None
    with ck.atomic_checkpoint_dir(tmp_path, 3, is_main=True, token="run1") as tmp_rank0:
        assert tmp_rank0 == tmp_rank1
        (tmp_rank0 / "shard-0.bin").write_bytes(b"0")
    manifest = json.loads((tmp_path / "step-000003" / ck.COMPLETE_MARKER).read_text())
    files = {
        name: {"size": 1, "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in (("shard-0.bin", b"0"), ("shard-1.bin", b"1"))
    }
    assert manifest == {"step": 3, "files": files}
    with pytest.raises(ValueError, match="non-main ranks must pass"):
        with ck.atomic_checkpoint_dir(tmp_path, 4, is_main=False):
            pass


def _draws() -> dict[str, list[float]]:
    return {
        "python": [random.random(), random.gauss(0, 1), random.gauss(0, 1)],
        "numpy": np.random.standard_normal(3).tolist() + np.random.rand(2).tolist(),
        "torch": torch.rand(3).tolist() + torch.randn(2).tolist(),
    }


_RESUMER = textwrap.dedent(
    """
    import json, random, sys
    import numpy as np, torch
    from lead_dist.train import checkpoint as ck
    from lead_dist.train import resume as contents
    random.seed(1); np.random.seed(1); torch.manual_seed(1)  # a fresh process's RNGs, different from the run's
    contents.load_rng_state(sys.argv[1], rank=3)
    print(json.dumps({
        "python": [random.random(), random.gauss(0, 1), random.gauss(0, 1)],
        "numpy": np.random.standard_normal(3).tolist() + np.random.rand(2).tolist(),
        "torch": torch.rand(3).tolist() + torch.randn(2).tolist(),
    }))
    """
)


def test_rng_draws_after_restore_in_a_new_process_equal_the_uninterrupted_draws(tmp_path: Path) -> None:
    random.seed(888)
    np.random.seed(888)
    torch.manual_seed(888)
    # leave a cached Gaussian in python's and numpy's generators: the half-used pair must survive the round trip
    random.gauss(0, 1)
    np.random.standard_normal(1)
    with ck.atomic_checkpoint_dir(tmp_path, 5) as tmp:
        contents.save_rng_state(tmp, rank=3)
    uninterrupted = _draws()

    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", _RESUMER, str(ck.latest(tmp_path))], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(result.stdout) == uninterrupted
    with pytest.raises(FileNotFoundError, match="no RNG state for rank 0.*rng-rank00003.pt"):
        contents.load_rng_state(ck.latest(tmp_path), rank=0)


def test_train_state_json_round_trip_and_errors(tmp_path: Path) -> None:
    state = ck.TrainState(
        step=120,
        data={"epoch": 2, "position": 17, "seed": 888},
        nonfinite_in_row=1,
        nonfinite_total=4,
        examples_seen=960,
    )
    ck.save_train_state(tmp_path, state)
    assert ck.load_train_state(tmp_path) == state
    with pytest.raises(TypeError, match="TrainState.data is not JSON-serialisable"):
        ck.save_train_state(tmp_path, ck.TrainState(data={"bad": torch.ones(1)}))
    (tmp_path / ck.TRAIN_STATE_FILE).write_text(json.dumps({"step": 1, "stepz": 2}))
    with pytest.raises(ValueError, match="unknown keys \\['stepz'\\]"):
        ck.load_train_state(tmp_path)


def test_train_state_of_an_earlier_version_still_loads(tmp_path: Path) -> None:
    """Checkpoints written before `layer_selection` and `extra` were retired hold them empty (nothing ever set them):
    they resume; a non-empty one is not ours and is refused like any unknown key."""
    earlier = {"step": 7, "data": {"epoch": 0}, "layer_selection": {}, "nonfinite_in_row": 0, "nonfinite_total": 1}
    (tmp_path / ck.TRAIN_STATE_FILE).write_text(json.dumps(earlier | {"examples_seen": 56, "extra": {}}))
    assert ck.load_train_state(tmp_path) == ck.TrainState(
        step=7, data={"epoch": 0}, nonfinite_total=1, examples_seen=56
    )
    (tmp_path / ck.TRAIN_STATE_FILE).write_text(json.dumps(earlier | {"extra": {"note": 1}}))
    with pytest.raises(ValueError, match="unknown keys \\['extra'\\]"):
        ck.load_train_state(tmp_path)


def _tiny_training_objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 3))
    return model, optimizer, scheduler


def _train(model, optimizer, scheduler, steps: int, offset: int) -> None:
    for i in range(steps):
        x = torch.linspace(-1, 1, 16).reshape(4, 4) * (i + offset + 1)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_model_optimizer_scheduler_round_trip_continues_identically(tmp_path: Path) -> None:
    model, optimizer, scheduler = _tiny_training_objects(0)
    _train(model, optimizer, scheduler, 3, offset=0)
    with ck.atomic_checkpoint_dir(tmp_path, 3) as tmp:
        contents.save_module_weights(model, tmp / "model.safetensors")
        contents.save_object_state(optimizer, tmp / "optimizer.pt")
        contents.save_object_state(scheduler, tmp / "scheduler.pt")
    _train(model, optimizer, scheduler, 2, offset=3)

    resumed, resumed_opt, resumed_sched = _tiny_training_objects(1)  # different initial weights
    path = ck.latest(tmp_path)
    contents.load_module_weights(resumed, path / "model.safetensors")
    contents.load_object_state(resumed_opt, path / "optimizer.pt")
    contents.load_object_state(resumed_sched, path / "scheduler.pt")
    assert resumed_sched.last_epoch == 3
    _train(resumed, resumed_opt, resumed_sched, 2, offset=3)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_module_weights_is_strict(tmp_path: Path) -> None:
    small = torch.nn.Sequential(torch.nn.Linear(4, 8))
    contents.save_module_weights(small, tmp_path / "w.safetensors")
    bigger = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    # One line (issue 21: a resume of another model is bad input, exit code 2), naming the first key and the counts.
    with pytest.raises(ValueError, match=r"2 missing, 0 unexpected \(first 1.bias\)"):
        contents.load_module_weights(bigger, tmp_path / "w.safetensors")
