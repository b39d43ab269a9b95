"""What a verb may write and what it may delete: the one rule every writing verb calls before it writes a byte.

1. **Never over an input.** `check_apart(outputs, inputs)` refuses an output (a file or folder the verb writes,
   replaces or clears) that is, contains, or lies inside any of the verb's inputs, with links resolved: an input
   or output given through a link is followed, and so is every link inside an input folder. (`lead-dist split`
   writes a folder whose corpus.jsonl, queries.jsonl and other qrels are links to the folder it was cut from, so
   `prepare --input SPLIT --out SOURCE --overwrite` would delete the split's own input.) Two outputs of one call
   must also be apart (`--out` equal to `--run-out` would write one over the other). Remote inputs (URLs,
   `pipe:` commands) and names that are no local path (hub ids) have no local bytes to protect and are skipped.
2. **`--overwrite` deletes only what we wrote.** A folder a verb creates carries MARKER (`.lead_dist.folder`,
   JSON naming its kind); `check_deletable(folder, kind, ...)` refuses to clear or replace a non-empty folder that
   does not carry the marker of that kind: a training run's folder is never taken for an embeddings folder, and a
   folder of the user's (or one written before markers existed) is never deleted by a typo. Delete such a folder
   by hand if it is meant to go.

Light on purpose (standard library + `lead_dist.atomic`/`errors`/`lockfile`), so `prepare` and `split` can use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lead_dist.atomic import atomic_write_text
from lead_dist.errors import UsageError
from lead_dist.lockfile import LOCK_NAME

MARKER = ".lead_dist.folder"
# kind -> the verbs that write (and so may delete) such a folder, for the messages
KINDS = {
    "train": "lead-dist train (an output_dir)",
    "prepare": "lead-dist prepare or mine (a prepared folder)",
    "embeddings": "lead-dist encode or evaluate (an embeddings folder)",
    "demo": "lead-dist demo (its --out)",
    "demo-data": "lead-dist prepare --format demo (the demo's BEIR files)",
}

PathLike = str | os.PathLike


@dataclass(frozen=True)
class _Input:
    flag: str  # the flag or config key that named it
    given: str  # as the user wrote it
    real: Path  # what is read, links resolved
    link: Path | None = None  # the link inside the input folder this path was reached through, if any


def _is_remote(text: str) -> bool:
    return "://" in text or text.startswith("pipe:")


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def _links_inside(folder: Path) -> Iterator[Path]:
    """Every symbolic link under `folder` (files and folders; links to folders are not entered), in name order."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted((*dirs, *files)):
            path = Path(root) / name
            if path.is_symlink():
                yield path


def _inputs(inputs: Mapping[str, PathLike | None]) -> list[_Input]:
    found = []
    for flag, value in inputs.items():
        if value is None or _is_remote(str(value)):
            continue
        path = Path(value).expanduser()
        if not (path.exists() or path.is_symlink()):
            continue  # nothing on disk to protect (a hub id, or a path the verb will report missing)
        found.append(_Input(flag, str(value), _real(path)))
        if path.is_dir():
            found.extend(_Input(flag, str(value), _real(link), link) for link in _links_inside(path))
    return found


def _relation(out: Path, other: Path) -> str | None:
    if out == other:
        return "is"
    if other.is_relative_to(out):
        return "contains"
    if out.is_relative_to(other):
        return "lies inside"
    return None


def check_apart(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None]) -> None:
    """Raise UsageError (one line, naming both flags) when an output is, contains or lies inside an input, links
    resolved, or when two outputs overlap. `outputs` and `inputs` map a flag or config key to its value (None:
    not given). Call it before writing anything, on every rank (file tests only)."""
    given = {flag: value for flag, value in outputs.items() if value is not None}
    sources = _inputs(inputs)
    for flag, value in given.items():
        out = _real(Path(value))
        for source in sources:
            relation = _relation(out, source.real)
            if relation is None:
                continue
            via = f" (through the link {source.link} -> {source.real})" if source.link is not None else ""
            if source.link is None and str(source.real) != str(Path(source.given).expanduser().absolute()):
                via = f" (which is {source.real})"
            raise UsageError(
                f"{flag} {value} {relation} {source.flag} {source.given}{via}: lead-dist never writes to or deletes "
                f"what it reads; choose another {flag}"
            )
    flags = list(given)
    for i, first in enumerate(flags):
        for second in flags[i + 1 :]:
            relation = _relation(_real(Path(given[first])), _real(Path(given[second])))
            if relation is not None:
                raise UsageError(
                    f"{first} {given[first]} {relation} {second} {given[second]}: one would be written over the "
                    "other; give them apart"
                )


def folder_entries(folder: PathLike) -> list[Path]:
    """What `folder` holds besides our lock files and marker (empty when it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(LOCK_NAME) and p.name != MARKER)


def marker_kind(folder: PathLike) -> str | None:
    """The kind recorded in `folder`'s marker; None when there is none (or it is unreadable: then it is no proof)."""
    try:
        kind = json.loads((Path(folder) / MARKER).read_bytes().decode("utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def mark_folder(folder: PathLike, kind: str) -> None:
    """Record that a verb of `kind` wrote `folder` (creating it), so a later `--overwrite` may replace it."""
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}; one of {', '.join(KINDS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MARKER, json.dumps({"kind": kind, "written_by": KINDS[kind]}) + "\n")


def _shown(entries: list[Path]) -> str:
    return ", ".join(p.name for p in entries[:4]) + (", ..." if len(entries) > 4 else "")


def check_deletable(folder: PathLike, kind: str, *, flag: str) -> None:
    """Refuse (UsageError naming `flag`) to clear or replace `folder` unless it is empty or carries the marker of
    `kind`: `--overwrite` deletes only what a verb of that kind wrote."""
    entries = folder_entries(folder)
    if not entries:
        return
    found = marker_kind(folder)
    if found == kind:
        return
    what = f"was written by {KINDS.get(found, found)}" if found else f"has no {MARKER} marker"
    raise UsageError(
        f"{flag} {folder}: --overwrite deletes only a folder written by {KINDS[kind]}; this one {what} and holds "
        f"{_shown(entries)}: delete it yourself if it is meant to go, or choose another {flag}"
    )


def check_ours(folder: PathLike, kind: str, *, flag: str, what: str) -> None:
    """Refuse to write into a non-empty `folder` that is not marked as `kind` (`what` says what would happen)."""
    entries = folder_entries(folder)
    if entries and marker_kind(folder) != kind:
        found = marker_kind(folder)
        whose = f"written by {KINDS.get(found, found)}" if found else f"without a {MARKER} marker"
        raise UsageError(
            f"{flag} {folder} is a folder {whose} holding {_shown(entries)}: {what}; choose a new or empty {flag}"
        )
