"""The `lead-dist` command: one verb per pipeline step, each in its own module under lead_dist/verbs/.

A verb module exposes `add_arguments(parser)` and `run(args) -> int`: it parses, checks its inputs and calls
library functions; library modules hold no argparse. Modules are imported only when their verb runs, so
`lead-dist --help` does not pay for torch, transformers or DeepSpeed.

Every verb also takes `--debug` (bad input shows its traceback too) and `--verbose` (keep the progress bars and
warnings of transformers, huggingface_hub and DeepSpeed, which are silenced by default). Bad input, a refused
request or a missing file ends a verb with one line `lead-dist VERB: error: ...` (`config error:` for a config
key, `data error:` for shards that cannot be read) on stderr and exit code 2 (`expected_errors`); a run that failed on
the way (`lead_dist.errors.RunFailed`, e.g. non-finite losses) gives one line and exit code 1; anything else is
a bug and keeps its traceback. This is the one place where an error becomes exit code 2: verbs raise, they do not
print their own refusals, so `--debug` adds the traceback to every one of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from lead_dist.errors import RunFailed

# verb -> (module, one-line help). Add a verb here when its module lands.
VERBS: dict[str, tuple[str, str]] = {
    "prepare": ("lead_dist.verbs.prepare", "read a retrieval dataset into training/corpus shards + manifest"),
    "split": ("lead_dist.verbs.split", "carve a dev split out of a BEIR train split (never trained on) -> BEIR folder"),
    "train": ("lead_dist.verbs.train", "train a model (warm-up) or distil a student (LEAD) under accelerate launch"),
    "cache-teacher": (
        "lead_dist.verbs.cache_teacher",
        "run a frozen teacher once over the training data; cache every layer",
    ),
    "encode": ("lead_dist.verbs.encode", "encode a corpus into resumable embedding shards (per rank)"),
    "search": ("lead_dist.verbs.search", "search embedding shards with a model's queries; TREC run out"),
    "evaluate": ("lead_dist.verbs.evaluate", "encode + search + score a BEIR split (nDCG@10, MRR@10, ...)"),
    "rerank": ("lead_dist.verbs.rerank", "re-rank a first-stage run's top documents with a DE, CB or CE + score"),
    "mine": ("lead_dist.verbs.mine", "hard negatives from a run (depth range, positives removed) -> shards"),
    "demo": ("lead_dist.verbs.demo", "run the main job on the embedded default data (no download)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lead-dist", description="LEAD distillation for dense retrieval")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_module, help_text) in VERBS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown verb {argv[0]!r}; choose one of: {', '.join(VERBS)}")
        parser.print_help()
        return 0
    verb, rest = argv[0], argv[1:]
    whole_lines(sys.stdout, sys.stderr)
    if "--verbose" not in rest:
        quiet_libraries()
    module = importlib.import_module(VERBS[verb][0])
    verb_parser = argparse.ArgumentParser(prog=f"lead-dist {verb}", description=VERBS[verb][1])
    module.add_arguments(verb_parser)
    verb_parser.add_argument("--debug", action="store_true", help="show the traceback of an input error too")
    verb_parser.add_argument("--verbose", action="store_true", help="keep the libraries' progress bars and notes")
    args = verb_parser.parse_args(rest)
    try:
        code = int(module.run(args) or 0)
    except RunFailed as error:  # the input was fine, the run's result is not (non-finite losses): exit code 1
        if args.debug:
            traceback.print_exc()
        print(f"lead-dist {verb}: error: {error}", file=sys.stderr)
        return 1
    except expected_errors() as error:
        if args.debug:
            traceback.print_exc()
        print(f"lead-dist {verb}: {error_label(error)}: {describe(error)}", file=sys.stderr)
        return 2
    if code == 0:
        leave_process_group()
    return code


def leave_process_group() -> None:
    """End the process group a verb joined (`lead_dist.distributed.leave`), else its rank can die of SIGABRT at exit.

    Only after success: a failed rank may leave a peer inside a collective, where ending the group can hang (NCCL);
    its exit code already says it failed. A verb that never touched torch.distributed does not import it here.
    """
    if "lead_dist.distributed" in sys.modules:
        sys.modules["lead_dist.distributed"].leave()


def error_label(error: BaseException) -> str:
    from lead_dist.config import ConfigError
    from lead_dist.data.errors import ShardError

    if isinstance(error, ConfigError):
        return "config error"
    return "data error" if isinstance(error, ShardError) else "error"


def describe(error: BaseException) -> str:
    """The one line for an expected error: its message on one line; a full disk that no writer of ours named
    (`lead_dist.atomic.DiskFullError` does) is named here by the path the error carries and the free space."""
    import errno

    from lead_dist.atomic import DiskFullError, free_space

    if isinstance(error, OSError) and error.errno == errno.ENOSPC and not isinstance(error, DiskFullError):
        where = error.filename or os.getcwd()
        return f"{error.filename or 'a file'}: no space left on the device; {free_space(where)}"
    return (str(error) or type(error).__name__).replace("\n", " ").strip()


def expected_errors() -> tuple[type[BaseException], ...]:
    """What bad input raises (each names the file, line, flag or key): printed as one line, exit code 2. ValueError
    and OSError cover the readers' checks and missing or unreadable files; TypeError, KeyError, RuntimeError and
    the rest are bugs."""
    import pickle

    from lead_dist.config import ConfigError
    from lead_dist.data.errors import DropShareExceeded, ShardError
    from lead_dist.lockfile import FolderLockedError

    refused_pickle = pickle.UnpicklingError  # a checkpoint file that would run code: named, never loaded
    return (ConfigError, ShardError, DropShareExceeded, FolderLockedError, refused_pickle, ValueError, OSError)


def whole_lines(*streams: object) -> None:
    """Make each line reach the terminal or pipe in one write, so that the lines of the ranks of a launch, which share
    one stderr, never run together. Under PYTHONUNBUFFERED (set by many launchers and containers) Python writes
    every piece straight through, and `print` writes a line's text and its newline as two pieces: another rank's
    line could land between them. Line buffering gathers the pieces and writes them at the newline; a line longer
    than the buffer (8 KiB) may still go out in parts. Only the process's own streams are changed (not a capture
    put in their place by a test or a caller)."""
    own = [stream for stream in streams if stream is not None and stream in (sys.__stdout__, sys.__stderr__)]
    for stream in own:
        stream.reconfigure(line_buffering=True, write_through=False)


def quiet_libraries() -> None:
    """Silence what the libraries print on every run (weight-loading progress bars, DeepSpeed's accelerator
    notice, transformers' advice), unless `--verbose`. Set before they are imported; a user's own setting wins."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import logging

    # DeepSpeed sets its logger's level when it is imported, so a level set here would not last; a filter does.
    logging.getLogger("DeepSpeed").addFilter(_deepspeed_notices_off)


def _deepspeed_notices_off(record: object) -> bool:
    """Keep DeepSpeed's errors and warnings, drop its info lines and its "Setting accelerator to CPU" notice."""
    import logging

    level, message = getattr(record, "levelno", logging.ERROR), str(getattr(record, "msg", ""))
    return level >= logging.WARNING and not message.startswith("Setting accelerator to CPU")


if __name__ == "__main__":
    sys.exit(main())
