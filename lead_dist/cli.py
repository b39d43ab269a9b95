"""The `lead-dist` command: one verb per pipeline step, each in its own module under lead_dist/verbs/.

A verb module exposes `add_arguments(parser)` and `run(args) -> int`: it parses, checks its inputs and calls
library functions; library modules hold no argparse. Modules are imported only when their verb runs, so
`lead-dist --help` does not pay for torch, transformers or DeepSpeed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    module = importlib.import_module(VERBS[verb][0])
    verb_parser = argparse.ArgumentParser(prog=f"lead-dist {verb}", description=VERBS[verb][1])
    module.add_arguments(verb_parser)
    return int(module.run(verb_parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
