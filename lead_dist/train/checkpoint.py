"""Atomic, resumable checkpoints: a kill at any moment never leaves a directory that looks complete.

Layout of `output_dir` (only names matching `step-NNNNNN` with a `COMPLETE` marker count as checkpoints):

    output_dir/
      step-000100/                 complete: every file fsynced, COMPLETE written last, then renamed into place
        COMPLETE                   JSON manifest {"step", "files": {relative path: {"size", "sha256"}}}
        train_state.json           TrainState (step, data cursor, non-finite counters, examples seen)
        ...                        whatever the writer put there (lead_dist's: see train/resume.py)
      ckpt-000200.tmp-1a2b3c4d/    a save in progress (or one killed mid-write): ignored, removed by `clean_incomplete`

How a save goes (`atomic_checkpoint_dir`): every rank writes into the same temporary directory
`ckpt-STEP.tmp-TOKEN`; the main process then fsyncs every file, writes the `COMPLETE` manifest (fsynced), fsyncs
the directory and renames it to `step-STEP` in one `os.rename`, then fsyncs `output_dir`. A reader (`latest`,
`list_checkpoints`) trusts a directory only if its name parses, its `COMPLETE` marker parses and every file of the
manifest exists with the recorded size (`incomplete_reason` says what is wrong), so a torn write, a half-renamed
replacement or a deleted file is never taken for a checkpoint. A resume also compares every file's sha256 with the
manifest (`damaged_file`). `--resume latest` passes over a truncated or damaged checkpoint to the previous one and
says once which step it skipped and why; when every checkpoint is damaged it refuses, naming the damage, instead of
starting afresh over the run's results. `--resume DIR` refuses a damaged DIR. Our own writer never leaves a
`step-NNNNNN` directory that is not complete (the rename is atomic), so such a directory is damage: it is reported,
never deleted at start-up; `keep_last` prunes it with the old checkpoints, and a save of its step replaces it.

Multi-rank protocol (the barriers are the caller's job, this module never calls a collective; `resume.save_checkpoint`
is the loop's use of it):

    token = <same string on every rank>            # e.g. f"{step}" after clean_incomplete() ran at start-up,
                                                   # or a random hex broadcast from the main process
    with atomic_checkpoint_dir(out, step, is_main=is_main, token=token) as tmp:
        ...                                        # every rank writes its files into the same tmp dir
        if is_main:
            save_train_state(tmp, state)
        barrier()                                  # BARRIER 1: all files are on disk before the main renames
    barrier()                                      # BARRIER 2: nobody reads or prunes before the rename is done
    if is_main:
        keep_last(out, keep)

`output_dir` must be a filesystem every rank sees (one node, or a shared filesystem across nodes).
Call `clean_incomplete(output_dir)` on the main process at start-up (before BARRIER-guarded work) so a
deterministic token never reuses a stale temp directory from a killed attempt. Progress is stored as JSON
(`save_train_state` / `load_train_state`) rather than pickled, so loading a checkpoint never runs code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lead_dist.atomic import replace_dir
from lead_dist.errors import UsageError

# No torch or numpy here: this module is used by light processes (tools, the crash tests' children) that should not
# pay seconds of import time. What goes inside a checkpoint (RNG, module and optimizer state, DeepSpeed loading) is
# in resume.py.

COMPLETE_MARKER = "COMPLETE"
TRAIN_STATE_FILE = "train_state.json"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
_TEMP_PREFIX = "ckpt-"  # temp dirs of saves in progress and dirs being deleted; never a checkpoint


def checkpoint_name(step: int) -> str:
    """`step-000123`: zero-padded so names sort like steps for any run under a million steps."""
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return f"step-{step:06d}"


# ---------------------------------------------------------------------------------------------------------------
# durability helpers


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes the names in it durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory under `root` (bottom-up so directory entries follow their files)."""
    root = Path(root)
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(root: Path) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rel != COMPLETE_MARKER:
                files[rel] = {"size": full.stat().st_size, "sha256": _sha256(full)}
    return dict(sorted(files.items()))


def _entry(value: Any) -> tuple[int, str | None]:
    """A manifest entry: {"size", "sha256"}, or a bare size (checkpoints written before the checksums)."""
    return (int(value["size"]), value.get("sha256")) if isinstance(value, dict) else (int(value), None)


def _write_durable(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------------------------
# the atomic directory


def temp_checkpoint_dir(output_dir: str | Path, step: int, token: str) -> Path:
    """The directory every rank writes a save of `step` into (same `token` on every rank)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise ValueError(f"checkpoint token must be letters, digits, '_' or '-', got {token!r}")
    return Path(output_dir) / f"{_TEMP_PREFIX}{step:06d}.tmp-{token}"


def commit_checkpoint(tmp: str | Path, output_dir: str | Path, step: int) -> Path:
    """Main process only, after every rank finished writing into `tmp`: fsync, mark COMPLETE, rename into place."""
    tmp, output_dir = Path(tmp), Path(output_dir)
    final = output_dir / checkpoint_name(step)
    fsync_tree(tmp)
    manifest = {"step": step, "files": _manifest(tmp)}
    # COMPLETE is the last file written; before the rename the directory's name still says "temporary", so even a
    # kill right after this line leaves nothing that looks complete.
    _write_durable(tmp / COMPLETE_MARKER, json.dumps(manifest, indent=1) + "\n")
    _fsync_path(tmp)
    # Re-saving a step (a resume from an older checkpoint reached it again) retires the old one under a temp name.
    replace_dir(tmp, final, retired=output_dir / f"{_TEMP_PREFIX}{step:06d}.old-{secrets.token_hex(4)}")
    _fsync_path(output_dir)
    return final


@contextlib.contextmanager
def atomic_checkpoint_dir(
    output_dir: str | Path, step: int, *, is_main: bool = True, token: str | None = None
) -> Iterator[Path]:
    """Yield a temporary directory to write checkpoint `step` into; on exit the main process commits it.

    Any writer works inside the block (DeepSpeed `save_checkpoint`, the helpers of resume.py, plain files).
    Single process: leave `token` out (a random one is drawn). Several ranks: pass the same `token` on every rank
    and put a barrier at the END of the block (see the module docstring), because the main process renames as
    soon as it leaves the block. If the block raises, the main process deletes the temp directory and re-raises;
    nothing is committed.
    """
    if token is None:
        if not is_main:
            raise ValueError("atomic_checkpoint_dir: non-main ranks must pass the main process's `token`")
        token = secrets.token_hex(4)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = temp_checkpoint_dir(output_dir, step, token)
    tmp.mkdir(exist_ok=True)
    try:
        yield tmp
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if is_main:
        commit_checkpoint(tmp, output_dir, step)


# ---------------------------------------------------------------------------------------------------------------
# finding, validating and pruning checkpoints


def incomplete_reason(path: str | Path) -> str | None:
    """Why `path` is not a committed checkpoint (name, COMPLETE manifest, every listed file with its size), in
    words; None when it is one."""
    path = Path(path)
    match = _STEP_DIR.match(path.name)
    marker = path / COMPLETE_MARKER
    if match is None:
        return f"{path.name} is not a step-NNNNNN directory"
    if not marker.is_file():
        return f"{marker} is missing"
    try:
        manifest = json.loads(marker.read_text(encoding="utf-8"))
        files, step = manifest["files"], int(manifest["step"])
        if step != int(match.group(1)):
            return f"{marker} records step {step}"
        for rel, value in files.items():
            size = _entry(value)[0]
            if not (path / rel).is_file():
                return f"{path / rel} is missing"
            if (path / rel).stat().st_size != size:
                return f"{path / rel} has {(path / rel).stat().st_size} bytes, {COMPLETE_MARKER} records {size} (truncated)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{marker} is unreadable ({type(error).__name__}: {error})"
    return None


def is_complete(path: str | Path) -> bool:
    """True when `path` is a committed checkpoint (see `incomplete_reason`)."""
    return incomplete_reason(path) is None


def _step_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    """Every `step-NNNNNN` directory, complete or not, as (step, path), oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), child) for child in output_dir.iterdir() if (m := _STEP_DIR.match(child.name))]
    return sorted(found, key=lambda pair: pair[0])


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first. A missing `output_dir` has none."""
    return [(step, path) for step, path in _step_dirs(Path(output_dir)) if path.is_dir() and is_complete(path)]


def latest(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under `output_dir`, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def damaged_file(path: str | Path) -> str | None:
    """The first file of a complete checkpoint whose sha256 differs from its COMPLETE manifest (a flipped byte, a
    file replaced with one of the same size), described; None when every recorded checksum matches."""
    path = Path(path)
    files = json.loads((path / COMPLETE_MARKER).read_text(encoding="utf-8"))["files"]
    for rel, value in files.items():
        expected = _entry(value)[1]
        if expected is not None and _sha256(path / rel) != expected:
            return f"{path / rel}: sha256 differs from the one recorded in {COMPLETE_MARKER} (the file is damaged)"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint directory `path` cannot be resumed from (incomplete, truncated, unreadable manifest, a file
    whose sha256 differs); None when it can."""
    if not path.is_dir():
        return f"{path} is not a directory"
    return incomplete_reason(path) or damaged_file(path)


def resolve_resume(output_dir: str | Path, resume: str | None, *, announce: bool = False) -> Path | None:
    """`--resume` value -> checkpoint dir. None/"" -> None; "latest" -> the newest checkpoint that is complete and
    whose files match their checksums: each newer one passed over is said once on stderr when `announce` (its step
    and why); None when output_dir holds no step directory at all; UsageError naming the damage when it holds only
    unusable ones. Else a path, which must be complete and undamaged."""
    if not resume:
        return None
    if resume == "latest":
        skipped = []
        for step, candidate in reversed(_step_dirs(Path(output_dir))):
            problem = checkpoint_problem(candidate)
            if problem is None:
                return candidate
            skipped.append(f"step {step}: {problem}")
            if announce:
                print(f"lead-dist train: --resume latest: skipping step {step}: {problem}", file=sys.stderr, flush=True)
        if skipped:
            raise UsageError(
                f"--resume latest: no usable checkpoint in {output_dir} ({'; '.join(skipped)}); nothing was "
                "changed: restore a checkpoint, start over with --overwrite, or choose another output_dir"
            )
        return None
    path = Path(resume)
    if not path.is_dir() or (reason := incomplete_reason(path)) is not None:
        why = "no such directory" if not path.is_dir() else reason
        raise FileNotFoundError(
            f"--resume {resume}: not a complete checkpoint ({why}; expected a step-NNNNNN directory holding a valid "
            f"{COMPLETE_MARKER} manifest); complete ones under {output_dir}: "
            f"{[str(p) for _, p in list_checkpoints(output_dir)] or 'none'}"
        )
    if (problem := damaged_file(path)) is not None:
        raise FileNotFoundError(f"--resume {resume}: {problem}")
    return path


def _remove_dir(path: Path, output_dir: Path) -> None:
    # Rename out of the checkpoint namespace first (atomic) so a kill during rmtree leaves only a temp-named dir.
    doomed = output_dir / f"{_TEMP_PREFIX}del-{secrets.token_hex(4)}"
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_incomplete(output_dir: str | Path) -> list[Path]:
    """Main process, with no save in flight: delete the temp dirs of saves a kill interrupted. Returns them. A
    `step-NNNNNN` directory that is not complete is left alone: the writer never makes one, so it is damage to
    report (`resolve_resume`), not debris."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    removed = []
    for child in sorted(output_dir.iterdir()):
        if child.is_dir() and child.name.startswith(_TEMP_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def keep_last(output_dir: str | Path, n: int) -> list[Path]:
    """Main process: keep the newest `n` complete checkpoints; delete older step dirs (complete or damaged) and the
    temp dirs of interrupted saves."""
    if n < 1:
        raise ValueError(f"train.keep_last must be >= 1 (the checkpoint to resume from), got {n}")
    output_dir = Path(output_dir)
    removed = clean_incomplete(output_dir)
    kept = list_checkpoints(output_dir)[-n:]
    oldest_kept = kept[0][0] if kept else -1
    for step, path in _step_dirs(output_dir):
        if step < oldest_kept and path.is_dir():
            _remove_dir(path, output_dir)
            removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------------------------
# what a checkpoint holds besides the engines' own files


@dataclasses.dataclass
class TrainState:
    """Everything about the run's progress that is not a tensor of a model or optimizer; stored as JSON."""

    step: int = 0  # optimizer steps completed
    data: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainStream.state_dict()
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0
    nonfinite_terms: list[str] = dataclasses.field(default_factory=list)  # non-finite at the first step of the run
    examples_seen: int = 0  # over every rank; for the reader of the checkpoint (nothing resumes from it)
    train_shards: str = ""  # digest of data.train's shards (names + sha256); "" in checkpoints from before it


# Fields that checkpoints of earlier versions hold and that nothing ever set: the layer pairs are a pure function of
# (seed, step). Such a checkpoint still loads when they are empty, as lead_dist always wrote them.
_RETIRED_FIELDS = ("layer_selection", "extra")


def save_train_state(directory: str | Path, state: TrainState) -> Path:
    """Write `train_state.json` (main process). Raises TypeError naming the field if something is not JSON."""
    path = Path(directory) / TRAIN_STATE_FILE
    payload = dataclasses.asdict(state)
    for key, value in payload.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"TrainState.{key} is not JSON-serialisable ({err}); store plain ints/floats/str") from err
    _write_durable(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return path


def load_train_state(directory: str | Path) -> TrainState:
    path = Path(directory) / TRAIN_STATE_FILE
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: missing; a checkpoint written by lead_dist always has one") from err
    fields = {f.name for f in dataclasses.fields(TrainState)}
    for name in _RETIRED_FIELDS:
        if isinstance(payload, dict) and payload.get(name, None) == {}:
            del payload[name]
    unknown = set(payload) - fields
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected a subset of {sorted(fields)}")
    return TrainState(**payload)
