"""`prepare --out`: never over an input, never over earlier output unless asked, replaced whole, one writer at a time.

- An `--out` that is, contains or lies inside any input (a file or folder named by --input, --passages,
  --collection, --queries, --qrels, --triples, --negative-lists, --negatives-run), links resolved, is refused
  (`lead_dist.guard.check_apart`): replacing the folder would delete the input.
- A non-empty `--out` needs `--overwrite`, and `--overwrite` replaces only a folder an earlier prepare (or mine)
  wrote: it carries the guard's marker of kind prepare (`lead_dist.guard.check_deletable`). The new output is built
  in a staging folder beside `--out` and put in place with one rename (`lead_dist.atomic.replace_dir`), so a reader
  sees the old folder or the new one, never a mixture, and a failed or killed prepare leaves the old folder as it
  was.
- One prepare per `--out` at a time: the lock file `.lead_dist.lock.prepare-NAME` beside `--out` (host and pid,
  `lead_dist.lockfile`; the lock of a killed prepare is found stale and taken over). The loser of two prepares into
  one `--out` is refused in one line. Holding the lock, prepare removes what killed prepares into the same `--out`
  left beside it (hidden `.NAME.prepare-*` staging, join-store and retired folders): no live prepare owns them.
- `--format demo --input DIR` writes the demo's BEIR files into DIR: it is an output there, and must be new, empty
  or an earlier demo dataset (marker kind demo-data).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from lead_dist.errors import UsageError
from lead_dist.guard import check_apart, check_deletable, check_ours, folder_entries, mark_folder
from lead_dist.lockfile import LOCK_NAME, FolderLockedError, acquire

INPUT_FLAGS = ("input", "passages", "collection", "queries", "qrels", "triples", "negative_lists", "negatives_run")
TEMP_TAG = "prepare-"  # hidden folders beside --out: .NAME.prepare-new-*, .NAME.prepare-old-*, .NAME.prepare-<tmp>


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_out(args: argparse.Namespace, unpacked: Path | None = None) -> None:
    """Refuse an --out over an input, or a used --out without --overwrite (UsageError naming the flags).
    `unpacked`: where a BEIR zip given as --input was unpacked (read too)."""
    demo_target = args.input if args.format == "demo" else None  # written, not read
    inputs = {_flag(name): getattr(args, name, None) for name in INPUT_FLAGS if not (name == "input" and demo_target)}
    inputs["--input (unpacked)"] = unpacked
    check_apart({"--out": args.out, "--input": demo_target}, inputs)
    out = Path(args.out)
    if out.is_file():
        raise UsageError(f"--out {args.out}: a file; expected a folder (new, empty, or replaced with --overwrite)")
    entries = folder_entries(out)
    if entries and not getattr(args, "overwrite", False):
        shown = ", ".join(p.name for p in entries[:4])
        raise UsageError(
            f"--out {args.out} is not empty ({shown}, ...): pass --overwrite to replace it, or choose another"
        )
    check_deletable(out, "prepare", flag="--out")
    if demo_target:
        what = "prepare --format demo would write its corpus, queries and qrels over what it holds"
        check_ours(demo_target, "demo-data", flag="--input", what=what)


@contextlib.contextmanager
def claimed(out: Path) -> Iterator[None]:
    """Hold `out`'s prepare lock (beside it) for the block; remove what killed prepares left beside `out` first."""
    out = out.resolve()
    try:
        lock = acquire(out.parent, f"lead-dist prepare --out {out}", name=f"{LOCK_NAME}.{TEMP_TAG}{out.name}")
    except FolderLockedError as error:
        raise UsageError(f"--out {out}: another prepare writes it: {error}") from None
    try:
        for stale in out.parent.glob(f".{out.name}.{TEMP_TAG}*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        lock.release()


def staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside `out` to build the output in, marked as prepare's."""
    out = out.resolve()
    staging = out.parent / f".{out.name}.{TEMP_TAG}new-{secrets.token_hex(4)}"
    staging.mkdir()
    mark_folder(staging, "prepare")
    return staging


def retired_name(out: Path) -> Path:
    """Where the replaced --out goes until it is deleted (a name the next prepare's clean-up recognises)."""
    out = out.resolve()
    return out.parent / f".{out.name}.{TEMP_TAG}old-{secrets.token_hex(4)}"


def scratch_prefix(out: Path) -> str:
    """Prefix of the join store's temporary folder beside --out (removed by the next prepare after a kill)."""
    return f".{out.resolve().name}.{TEMP_TAG}"
