"""One writer per folder: a lock file holding the host and pid of the process that writes there.

Every verb that writes a folder a second process could write at the same time (`train`'s output_dir, `encode`'s and
`evaluate`'s embeddings folder, cache writers) takes the folder's lock first:

    with folder_lock(out, "lead-dist encode"):
        ...                                  # write into out

`<folder>/.lead_dist.lock` is created whole or not at all (written under a temporary name, then hard-linked into
place, which fails when the name exists), holds JSON {"host", "pid", "start", "purpose", "since"}, and is removed
when the block ends (also on an exception; `atexit` covers a process that ends without leaving the block). A
process killed with -9 leaves its lock behind: the next writer on the same host sees that no process with that pid
(and that start time) is alive, says so, and takes the lock over. A lock of another host cannot be checked from
here: it is refused, naming the host, the pid and the file to delete once that process is known to be gone.

Light on purpose (no torch; of ours only `lead_dist.textfile`) so every writer can use it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lead_dist.textfile import NotUtf8Error, read_utf8

__all__ = ["LOCK_NAME", "FolderLock", "FolderLockedError", "acquire", "folder_lock"]

LOCK_NAME = ".lead_dist.lock"


class FolderLockedError(RuntimeError):
    """The folder is being written by another live process (or one on another host)."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux: field 22 of /proc/PID/stat), so a reused pid is not taken for the
    lock's owner; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # the fields after "(comm)": state is field 3, starttime field 22


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds that pid: alive
        pass
    return start is None or _process_start(pid) in (None, start)


@dataclass
class FolderLock:
    """A held lock; `release()` removes the lock file if it is still ours (idempotent)."""

    path: Path
    content: str

    def release(self) -> None:
        try:
            if self.path.read_bytes() == self.content.encode("utf-8"):
                self.path.unlink()
        except FileNotFoundError:
            pass


def _describe(owner: dict) -> str:
    return (
        f"{owner.get('purpose', 'a lead_dist process')} (pid {owner.get('pid')} on host {owner.get('host')}, "
        f"since {owner.get('since', '?')})"
    )


def _break_if_stale(path: Path, text: str) -> bool:
    """Remove the lock file at `path` if it still holds `text` and its owner is dead on this host. True if removed."""
    try:
        owner = json.loads(text)
        host, pid, start = owner["host"], int(owner["pid"]), owner.get("start")
    except (ValueError, KeyError, TypeError):
        raise FolderLockedError(
            f"{path}: unreadable lock file; if no lead_dist process writes {path.parent}, delete it"
        ) from None
    if host != socket.gethostname():
        raise FolderLockedError(
            f"{path.parent} is locked by {_describe(owner)}; it cannot be checked from this host. Wait for it, or "
            f"delete {path} once that process is known to have ended"
        )
    if _alive(pid, start):
        raise FolderLockedError(
            f"{path.parent} is in use by {_describe(owner)}; wait for it to end or write to another folder"
        )
    # Move it aside before deleting, and check it is still the dead owner's: another process may have broken the
    # same stale lock and taken a fresh one in between; that fresh lock is put back.
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if aside.read_bytes() != text.encode("utf-8"):
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink()
    print(f"lead-dist: removed the stale lock of {_describe(owner)} from {path.parent}", file=sys.stderr)
    return True


def acquire(folder: str | Path, purpose: str, *, name: str = LOCK_NAME) -> FolderLock:
    """Take `folder`'s lock (creating the folder); FolderLockedError if a live process holds it. `name` (starting
    with LOCK_NAME) gives a lock of its own to something beside the folder's content: `prepare` locks its --out
    from the parent folder, because it replaces --out whole (a lock inside would go with the old folder)."""
    if not name.startswith(LOCK_NAME):
        raise ValueError(f"a lock file name starts with {LOCK_NAME}, got {name!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": _process_start(os.getpid()),
        "purpose": purpose,
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    content = json.dumps(owner) + "\n"
    tmp = folder / f"{LOCK_NAME}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp.write_text(content, encoding="utf-8")
    try:
        for _attempt in range(3):
            try:
                os.link(tmp, path)  # atomic, and fails when a lock exists: the file appears whole or not at all
            except FileExistsError:
                try:
                    text = read_utf8(path)
                except FileNotFoundError:
                    continue  # released in between: try again
                except NotUtf8Error as error:
                    raise FolderLockedError(
                        f"unreadable lock file ({error}); if no lead_dist process writes {folder}, delete it"
                    ) from None
                _break_if_stale(path, text)
                continue
            lock = FolderLock(path, content)
            atexit.register(lock.release)
            return lock
    finally:
        tmp.unlink(missing_ok=True)
    raise FolderLockedError(f"{path}: could not take the lock after 3 attempts (other processes keep taking it)")


@contextlib.contextmanager
def folder_lock(folder: str | Path, purpose: str) -> Iterator[FolderLock]:
    """`acquire` for the length of a block."""
    lock = acquire(folder, purpose)
    try:
        yield lock
    finally:
        lock.release()
