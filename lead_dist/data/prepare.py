"""`lead-dist prepare`: read a retrieval dataset, write training shards, corpus shards, evaluation queries and
qrels, and manifest.json into one folder.

    lead-dist prepare --format beir --input ../shared/data/scifact --split train --out shards/sf
    lead-dist prepare --format beir --input DIR --negatives-run run.trec --depth 3:100 --out shards/x
    lead-dist prepare --format msmarco --input msmarco/ --split train --triples qidpidtriples.tsv --out shards/mm
    lead-dist prepare --format reference --input train.json --passages psgs.tsv --out shards/ref
    lead-dist prepare --format demo --out shards/demo

Without a negative source (SciFact train has none), examples carry empty negative lists and the trainer uses
in-batch (and cross-rank) negatives only. Training examples are shuffled once (--seed) and split into --shards
shards whose sizes differ by at most one, so every rank and worker streams an equal share.
The command line (flags, exit codes) is lead_dist/verbs/prepare.py; `prepare(args)` takes its parsed flags.

Memory does not grow with the corpus: the join runs in an sqlite3 file (store.py) in a temporary folder beside
--out, removed when prepare ends; the output is byte-identical to the former in-memory join.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import errno
import itertools
import json
import math
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lead_dist.atomic import DiskFullError, replace_dir
from lead_dist.data.assemble import Assembled, SourceBundle, assemble
from lead_dist.data.beir_zip import beir_from_zip, is_beir_zip
from lead_dist.data.drops import DropLog
from lead_dist.data.errors import DataFormatError
from lead_dist.data.manifest import FORMAT_VERSION, describe_file, negatives_summary, write_manifest
from lead_dist.data.out_folder import check_out, claimed, retired_name, scratch_prefix, staging_dir
from lead_dist.data.readers.trec_run import parse_depth
from lead_dist.data.shards import write_shard
from lead_dist.data.sources import add_run_negatives, beir_bundle, msmarco_bundle, reference_bundle
from lead_dist.data.store import PrepareStore
from lead_dist.guard import mark_folder

TRAIN_SHARD = "train-{:06d}.tar"
CORPUS_SHARD = "corpus-{:06d}.tar"
RUN_FLAGS = ("overwrite", "debug", "verbose", "sha256")  # sha256: checks a zip; the files read are in "sources"
AUTO_SHARD_TARGET = 5000  # examples per training shard when --shards is not given
AUTO_MIN_SHARDS = 8  # enough for 2 ranks x 4 workers (or 8 ranks x 1) without a rank going dry


def _bundle_for(args: argparse.Namespace, work: Path, unpacked: Path | None) -> SourceBundle:
    if args.format == "beir":
        if not args.input:
            raise ValueError("--format beir needs --input FOLDER (corpus.jsonl, queries.jsonl, qrels/) or a BEIR zip")
        bundle = beir_bundle(unpacked or args.input, args.split)
    elif args.format == "demo":
        from lead_dist.data.demo_dataset import write_demo_dataset

        folder = Path(args.input) if args.input else work / "source"
        write_demo_dataset(folder)  # a given --input was checked to be new, empty or an earlier demo dataset
        mark_folder(folder, "demo-data")
        bundle = beir_bundle(folder, args.split)
    elif args.format == "msmarco":
        bundle = msmarco_bundle(
            args.input, args.split, collection=args.collection, queries=args.queries, qrels=args.qrels,
            triples=args.triples, negative_lists=args.negative_lists,
        )  # fmt: skip
    else:
        if not args.input or not args.passages:
            raise ValueError("--format reference needs --input TRAIN.json and --passages PSGS.tsv")
        bundle = reference_bundle(args.input, args.passages, id_offset=args.id_offset)
    if args.negatives_run:
        add_run_negatives(bundle, args.negatives_run, parse_depth(args.depth))
    return bundle


def equal_shard_sizes(total: int, shards: int) -> list[int]:
    """`shards` sizes summing to `total` that differ by at most one (larger ones first)."""
    base, extra = divmod(total, shards)
    return [base + (1 if i < extra else 0) for i in range(shards)]


def _options(args: argparse.Namespace) -> dict:
    # what shaped the data; not how the command ran (--overwrite, --debug, --verbose change no byte of it)
    return {key: value for key, value in sorted(vars(args).items()) if key not in ("verb", *RUN_FLAGS)}


def _write_train_shards(out: Path, data: Assembled, shards: int | None, seed: int) -> list[dict]:
    total = data.num_examples
    if total == 0:
        return []
    # The one-time shuffle permutes example positions: shuffle() swaps by index only, so shuffling the positions
    # gives the order shuffling the examples themselves gave, without holding them (4 bytes per example).
    order = array.array("l", range(total))
    random.Random(seed).shuffle(order)
    count = shards if shards is not None else max(AUTO_MIN_SHARDS, math.ceil(total / AUTO_SHARD_TARGET))
    count = min(count, total)
    described, start = [], 0
    for index, size in enumerate(equal_shard_sizes(total, count)):
        path = out / TRAIN_SHARD.format(index)
        chunk = order[start : start + size]
        write_shard(path, (data.store.kept_example(position) for position in chunk), first_key=start)
        described.append({"name": path.name, "count": size, **_without_path(describe_file(path))})
        start += size
    return described


def _write_corpus_shards(out: Path, data: Assembled, shard_size: int) -> list[dict]:
    passages = data.store.passages()  # streamed from the store: one record at a time, not a shard's worth
    described, start = [], 0
    while (first := next(passages, None)) is not None:
        path = out / CORPUS_SHARD.format(len(described))
        chunk = itertools.chain([first], itertools.islice(passages, shard_size - 1))
        count = write_shard(path, ({"id": pid, "title": t, "text": x} for pid, t, x in chunk), first_key=start)
        described.append({"name": path.name, "count": count, **_without_path(describe_file(path))})
        start += count
    return described


def _without_path(description: dict) -> dict:
    return {k: v for k, v in description.items() if k != "path"}


def _write_evaluation_files(out: Path, data: Assembled) -> int:
    """queries.jsonl ({"id","text"}) of every judged query of the split, and its qrels in BEIR tsv layout."""
    judged = 0
    with (out / "queries.jsonl").open("w", encoding="utf-8", newline="\n") as handle:
        for qid, text in data.store.judged_queries():
            handle.write(json.dumps({"id": qid, "text": text}, ensure_ascii=False) + "\n")
            judged += 1
    with (out / "qrels.tsv").open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, pid, score in data.store.qrels():
            handle.write(f"{qid}\t{pid}\t{int(score) if float(score).is_integer() else score}\n")
    return judged


@contextlib.contextmanager
def _scratch_store(out: Path) -> Iterator[PrepareStore]:
    """The join's sqlite3 file, in a temporary folder beside the output (where the space for the output is),
    removed when prepare ends, also when it fails."""
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix(out), dir=out.resolve().parent) as scratch:
        store = PrepareStore(Path(scratch) / "join.sqlite")
        try:
            yield store
        finally:
            store.close()


def prepare(args: argparse.Namespace) -> dict:
    """Run the whole preparation; returns the manifest it wrote."""
    if args.shards is not None and args.shards < 1:
        raise ValueError(f"--shards {args.shards}: expected a positive number of training shards")
    if args.corpus_shard_size < 1:
        raise ValueError(f"--corpus-shard-size {args.corpus_shard_size}: expected a positive number")
    if not 0 <= args.max_drop_share <= 1:
        raise ValueError(f"--max-drop-share {args.max_drop_share}: expected a share between 0 and 1")
    unpacked = None
    if args.format == "beir" and is_beir_zip(args.input):
        unpacked = beir_from_zip(args.input, args.sha256)  # a zip or its URL: unpacked once into the cache
    elif args.sha256:
        raise ValueError("--sha256 checks a BEIR zip given as --input (a .zip file or an http(s) URL)")
    check_out(args, unpacked)
    out = Path(args.out)
    with claimed(out):
        check_out(args, unpacked)  # again, holding the lock: another prepare may have written --out meanwhile
        work = staging_dir(out)
        try:
            manifest = _prepare_into(args, work, out, unpacked)
            # the demo's source files were described where they were written: say where they now are
            for source in manifest["sources"]:
                if source["path"].startswith(str(work)):
                    source["path"] = str(out.resolve()) + source["path"][len(str(work)) :]
            write_manifest(work, manifest)
            replace_dir(work, out.resolve(), retired=retired_name(out))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return manifest


@contextlib.contextmanager
def _disk_full_named(files: list[str], out: Path) -> Iterator[None]:
    """A full disk while preparing (a shard, an evaluation file, the join's sqlite3 store) becomes one line naming
    the file and what prepare needs: about twice the inputs' size beside --out (the store holds the corpus text
    once, the shards once more)."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as error:
        store_full = isinstance(error, sqlite3.OperationalError) and "full" in str(error)
        if not (store_full or (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))):
            raise
        inputs = sum(Path(file).stat().st_size for file in files if Path(file).is_file())
        where = getattr(error, "path", None) or getattr(error, "filename", None) or out.resolve().parent
        raise DiskFullError(
            where, f"prepare needs about {2 * inputs} bytes beside --out {out} (twice its inputs' {inputs} bytes)"
        ) from error


def _prepare_into(args: argparse.Namespace, work: Path, out: Path, unpacked: Path | None) -> dict:
    """Read, join and write everything into the staging folder `work`; returns the manifest (not yet written)."""
    bundle = _bundle_for(args, work, unpacked)
    with _disk_full_named(bundle.files, out), _scratch_store(out) as store:
        log = DropLog()
        data = assemble(
            bundle, log, store, min_relevance=args.min_relevance, keep_without_negatives=args.keep_without_negatives
        )
        for kind in ("passages", "queries", "judgements"):  # an empty input "succeeds" with nothing: refused
            if log.totals[kind] == 0:
                raise DataFormatError(f"{bundle.file_of.get(kind, '--input')}: no {kind} (an empty file?)")
        log.check(args.max_drop_share)
        return _write_outputs(args, work, bundle, data, log)


def _write_outputs(args: argparse.Namespace, out: Path, bundle: SourceBundle, data: Assembled, log: DropLog) -> dict:
    """Every shard and evaluation file; returns the manifest describing them."""
    train_shards = _write_train_shards(out, data, args.shards, args.seed)
    corpus_shards = [] if args.no_corpus else _write_corpus_shards(out, data, args.corpus_shard_size)
    num_eval_queries = _write_evaluation_files(out, data)
    num_positive_pairs, negative_counts = data.store.kept_counts()
    return {
        "format_version": FORMAT_VERSION,
        "format": args.format,
        "split": args.split,
        "options": _options(args),
        "sources": [describe_file(path) for path in bundle.files],
        "num_queries": data.num_examples,
        "num_positive_pairs": num_positive_pairs,
        "num_passages": data.store.count_passages(),
        "num_eval_queries": num_eval_queries,
        "num_qrels": data.store.count_qrels(),
        "has_negatives": data.has_negative_source,
        "negatives_per_query": negatives_summary(negative_counts),
        "stats": data.stats,
        "drops": {"counts": log.counts(), "shares": log.shares(), "totals": dict(log.totals), "records": log.drops},
        "shards": {"train": train_shards, "corpus": corpus_shards},
        "evaluation": {"queries": "queries.jsonl", "qrels": "qrels.tsv"},
    }
