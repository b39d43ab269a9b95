"""Errors the data layer raises: each names the file (and line) and what was expected."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A malformed input line: names the file, the 1-based line number and what was expected."""

    def __init__(self, message: str) -> None:
        # One string argument only, so the error survives being re-raised from a DataLoader worker.
        super().__init__(message)

    @classmethod
    def at(cls, path: str | Path, line: int | None, expected: str, got: str | None = None) -> DataFormatError:
        where = f"{path}:{line}" if line is not None else str(path)
        message = f"{where}: expected {expected}"
        if got is not None:
            shown = got if len(got) <= 120 else got[:117] + "..."
            message += f", got {shown!r}"
        return cls(message)


class ShardError(RuntimeError):
    """A shard that cannot be read (truncated, corrupt, or not what its manifest says); names the shard."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class DropShareExceeded(RuntimeError):
    """More of an input was dropped than `--max-drop-share` allows."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
