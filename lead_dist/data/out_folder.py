"""`prepare --out`: never over an input, never over earlier output unless asked, and replaced whole.

- An `--out` that equals or contains any input (a file or folder named by --input, --passages, --collection,
  --queries, --qrels, --triples, --negative-lists, --negatives-run) is refused: replacing the folder would delete
  the input (before this check, `--out` equal to `--input` rewrote the SciFact queries file).
- A non-empty `--out` needs `--overwrite`. The new output is built in a staging folder beside `--out` and put in
  place with one rename (`lead_dist.atomic.replace_dir`), so a reader sees the old folder or the new one, never a
  mixture, and a failed or killed prepare leaves the old folder as it was (plus, after a kill, a hidden
  `.NAME.prepare-new-*` staging folder, which the next prepare into the same --out removes).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
from pathlib import Path

from lead_dist.errors import UsageError

INPUT_FLAGS = ("input", "passages", "collection", "queries", "qrels", "triples", "negative_lists", "negatives_run")


def check_out(args: argparse.Namespace) -> None:
    """Refuse an --out over an input, or a used --out without --overwrite (UsageError naming the flags)."""
    out = Path(args.out).resolve()
    for flag in INPUT_FLAGS:
        value = getattr(args, flag, None)
        if value and "://" not in str(value):
            source = Path(value).resolve()
            if source == out or source.is_relative_to(out):
                relation = "is" if source == out else "contains"
                raise UsageError(
                    f"--out {args.out} {relation} --{flag.replace('_', '-')} {value}: prepare replaces --out whole, "
                    "which would destroy the input; choose another --out"
                )
    if out.is_file():
        raise UsageError(f"--out {args.out}: a file; expected a folder (new, empty, or replaced with --overwrite)")
    if out.is_dir() and any(out.iterdir()) and not getattr(args, "overwrite", False):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise UsageError(
            f"--out {args.out} is not empty ({shown}, ...): pass --overwrite to replace it, or choose another"
        )


def staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside `out` to build the output in (leftovers of killed attempts removed first)."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.prepare-new-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = out.parent / f".{out.name}.prepare-new-{secrets.token_hex(4)}"
    staging.mkdir()
    return staging
