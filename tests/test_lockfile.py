"""The folder lock (lead_dist/lockfile.py): one holder, stale locks of dead or replaced processes taken over, a lock
of another host or an unreadable one refused by name. Real processes are in test_train_output_dir.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from lead_dist.lockfile import LOCK_NAME, FolderLockedError, acquire, folder_lock


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: no process has this pid now (until the kernel reuses it)
    return child.pid


def _plant(folder, **owner) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "purpose": "a test", **owner}))


def test_one_holder_at_a_time_and_released_at_the_end(tmp_path):
    with folder_lock(tmp_path / "out", "first") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(FolderLockedError, match=f"in use by first \\(pid {os.getpid()}"):
            acquire(tmp_path / "out", "second")
    assert not (tmp_path / "out" / LOCK_NAME).exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # no temporary file left either


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    pid = _dead_pid()
    _plant(tmp_path, pid=pid)
    lock = acquire(tmp_path, "new")
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"removed the stale lock of a test (pid {pid}" in capsys.readouterr().err
    lock.release()


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path):
    """This process's pid with another start time: the owner died and the pid went to someone else."""
    _plant(tmp_path, pid=os.getpid(), start="1")
    acquire(tmp_path, "new").release()


def test_a_lock_of_another_host_or_an_unreadable_one_is_refused(tmp_path):
    _plant(tmp_path, pid=1, host="elsewhere.example")
    with pytest.raises(
        FolderLockedError, match=f"locked by a test \\(pid 1 on host elsewhere.example.*delete {tmp_path / LOCK_NAME}"
    ):
        acquire(tmp_path, "new")
    (tmp_path / LOCK_NAME).write_text("{half")
    with pytest.raises(FolderLockedError, match="unreadable lock file"):
        acquire(tmp_path, "new")
