"""A decision about a folder that the main process makes and every rank obeys (one all-gather).

The main process takes a folder's lock, refuses a used folder or clears it; if it refuses, every rank raises the
same UsageError instead of waiting in a collective for a main process that has left. Used by `train`'s output_dir
guard and by the writers of embeddings folders (`encode`, `evaluate`); a cache writer uses it the same way:

    lock = on_main(is_main, lambda: lock_folder(folder, "lead-dist cache-teacher"))
    try: ... finally: if lock: lock.release()
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lead_dist.distributed import all_gather_objects
from lead_dist.errors import UsageError
from lead_dist.guard import folder_entries
from lead_dist.lockfile import FolderLock, FolderLockedError, acquire

T = TypeVar("T")


def on_main(is_main: bool, decide: Callable[[], T]) -> T | None:
    """Run `decide` on the main process; a UsageError or OSError it raises is raised on every rank. Returns its
    result on the main process, None elsewhere. Call on every rank (with or without a process group)."""
    result, refusal = None, None
    if is_main:
        try:
            result = decide()
        except (UsageError, OSError) as error:  # every rank must reach the gather, whatever the main hit
            refusal = str(error)
    verdicts = [v for v in all_gather_objects(refusal) if v]
    if verdicts:
        if isinstance(result, FolderLock):
            result.release()
        raise UsageError(verdicts[0])
    return result


def lock_folder(folder: str | Path, purpose: str) -> FolderLock:
    """`lockfile.acquire`, with a held lock reported as a UsageError (one line, exit 2)."""
    try:
        return acquire(folder, purpose)
    except FolderLockedError as error:
        raise UsageError(str(error)) from None


def clear_folder(folder: str | Path) -> int:
    """Delete everything in `folder` but its lock (held by the caller) and its marker (`lead_dist.guard`: the caller
    checked it with `check_deletable`). Returns how many entries went."""
    entries = folder_entries(folder)
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return len(entries)
