"""Write-to-temp-then-rename: the one implementation every writer of a user-visible file or folder uses.

A reader (or a resumed run) sees either the old file or the whole new one, never a part: the data goes to a
temporary name beside the target, in the same folder (so the rename cannot cross file systems), and `os.replace`
swaps it in at once. Temporary names are `<name>.<pid>-<random>.tmp`, unique per writer, so ranks writing the same
file (the same content, e.g. an embeddings manifest) do not trample each other's temporary file. An error removes
the temporary file; a kill -9 can leave one behind, which no reader mistakes for the target.

A full disk (ENOSPC) becomes a `DiskFullError` naming the file, the bytes it needed (or had written when the disk
filled) and the space left, instead of an `[Errno 28]` with no path: `lead_dist.cli` prints it as one line.

No fsync: this protects against a killed process, not against a power cut (the checkpoint protocol, which must
survive both, adds its own fsyncs around `replace_dir`). Imports nothing of ours and no torch, so light processes
(checkpoint tools, benchmark orchestration) can use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["DiskFullError", "atomic_open", "atomic_write_bytes", "atomic_write_text", "replace_dir", "temp_path"]


class DiskFullError(OSError):
    """No space left where a file was being written; the message names the file and the bytes it needed."""

    def __init__(self, path: str | Path, needed: str) -> None:
        super().__init__(errno.ENOSPC, f"{path}: no space left on the device: {needed}; {free_space(path)}")
        self.path = str(path)

    def __str__(self) -> str:
        return str(self.args[1])


def free_space(path: str | Path) -> str:
    """`N bytes are free in FOLDER`, for the nearest existing folder of `path`."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return f"{shutil.disk_usage(folder).free} bytes are free in {folder}"


def _is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def temp_path(path: str | Path) -> Path:
    """A fresh temporary name beside `path`: `<name>.<pid>-<8 hex>.tmp`."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing ("w" text or "wb" bytes); on a clean exit it replaces `path`,
    on an error it is removed and `path` is left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException as error:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if _is_disk_full(error) and not isinstance(error, DiskFullError):
            raise DiskFullError(path, f"the disk filled after {written} bytes of it were written") from error
        raise


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    try:
        with atomic_open(path, "wb") as handle:
            handle.write(data)
    except DiskFullError as error:
        raise DiskFullError(path, f"it needs {len(data)} bytes") from error.__cause__


def replace_dir(new: str | Path, final: str | Path, *, retired: str | Path | None = None) -> None:
    """Put the finished folder `new` at `final` (same parent folder), replacing any folder there.

    rename() cannot replace a non-empty folder, so an existing `final` is first renamed to `retired` (default
    `.<name>.old-<random>` beside it; pass a name your own clean-up recognises), then `new` is renamed into place and
    the retired folder deleted. A kill between the two renames leaves `final` missing and both folders on disk,
    never a mixture of the two.
    """
    new, final = Path(new), Path(final)
    if not final.exists():
        os.rename(new, final)
        return
    retired = Path(retired) if retired is not None else final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    os.rename(final, retired)
    os.rename(new, final)
    shutil.rmtree(retired, ignore_errors=True)
