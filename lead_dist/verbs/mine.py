"""`lead-dist mine`: hard negatives from a TREC run (depth range, every positive removed) -> training shards.

    lead-dist search --model DIR --index emb --queries ../shared/data/scifact --qrels .../qrels/train.tsv --out r.trec
    lead-dist mine --run r.trec --format beir --input ../shared/data/scifact --split train --depth 3:100 --out shards/

Writes <out>/negatives.trec (the mined negatives, ranks renumbered) and <out>/mining_report.json, then the training
shards through `lead-dist prepare` (lead_dist.data), which reads that file as its negative source.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lead_dist.atomic import atomic_write_text
from lead_dist.data.readers.qrels import read_qrels
from lead_dist.data.readers.trec_run import parse_depth, read_run
from lead_dist.guard import check_apart
from lead_dist.retrieval.mine import mine_negatives, negatives_as_run
from lead_dist.retrieval.runfile import write_run
from lead_dist.verbs.common import print_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="TREC run file (e.g. from `lead-dist search`)")
    parser.add_argument("--format", choices=("beir", "msmarco"), default="beir", help="input format for the shards")
    parser.add_argument("--input", required=True, help="BEIR or MS MARCO folder the run was made from")
    parser.add_argument("--split", default="train", help="qrels split whose positives are removed (default train)")
    parser.add_argument("--qrels", help="qrels file (default <input>/qrels/<split>.tsv for BEIR)")
    parser.add_argument("--depth", default="1:100", help="ranks FIRST:LAST kept (1-based, inclusive), e.g. 30:200")
    parser.add_argument("--min-relevance", type=int, default=1, help="grade that makes a document a positive")
    parser.add_argument("--out", required=True, help="training shard folder")
    parser.add_argument("--shards", type=int, help="number of training shards (passed to prepare)")
    parser.add_argument("--negatives-only", action="store_true", help="write negatives.trec only, no shards")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (as prepare does)")


def run(args: argparse.Namespace) -> int:
    depth = parse_depth(args.depth)
    check_apart({"--out": args.out}, {"--run": args.run, "--input": args.input, "--qrels": args.qrels})
    if args.qrels:
        qrels_path = Path(args.qrels)
    elif args.format == "beir":
        qrels_path = Path(args.input) / "qrels" / f"{args.split}.tsv"
    else:
        raise ValueError("--format msmarco needs --qrels (the qrels of the split the run was made for)")
    run = read_run(args.run)
    repeats: list[str] = []  # a judged pair repeated in the qrels keeps its first grade; counted
    report = mine_negatives(run, read_qrels(qrels_path, repeats.append), depth, min_relevance=args.min_relevance)
    out = Path(args.out)
    summary = {**report.as_dict(), "depth": list(depth), "run": str(args.run), "qrels": str(qrels_path),
               "duplicate_judgements": len(repeats), "duplicate_judgement_examples": repeats[:5]}  # fmt: skip
    if args.negatives_only:
        out.mkdir(parents=True, exist_ok=True)
        write_run(negatives_as_run(report, run), out / "negatives.trec", tag="mined")
        atomic_write_text(out / "mining_report.json", json.dumps(summary, indent=1))
        print_summary(summary)
        return 0
    # prepare replaces --out whole and refuses an input inside it: the negatives wait beside --out until then
    with _scratch_beside(out) as scratch:
        negatives_file = scratch / "negatives.trec"
        write_run(negatives_as_run(report, run), negatives_file, tag="mined")
        _prepare_shards(args, out, negatives_file, qrels_path, depth)
        shutil.copyfile(negatives_file, out / "negatives.trec")
        _point_manifest_at_kept_negatives(out, negatives_file)
        atomic_write_text(out / "mining_report.json", json.dumps(summary, indent=1))
    print_summary(summary)
    return 0


@contextlib.contextmanager
def _scratch_beside(out: Path) -> Iterator[Path]:
    """A temporary folder `.NAME.mine-PID-*` beside --out, removed at the end; one that a killed mine (its pid no
    longer alive) left behind is removed first."""
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{out.resolve().name}.mine-*"):
        pid = stale.name.rsplit(".mine-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    prefix = f".{out.resolve().name}.mine-{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as scratch:
        yield Path(scratch)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _point_manifest_at_kept_negatives(out: Path, staged: Path) -> None:
    """prepare recorded the staged negatives file, which goes with the scratch folder; the manifest names the copy
    kept in --out instead (the same bytes: its size and sha256 stand)."""
    from lead_dist.data.manifest import read_manifest, write_manifest

    manifest = read_manifest(out)
    kept = str(out / "negatives.trec")
    manifest["options"]["negatives_run"] = kept
    for source in manifest["sources"]:
        if source["path"] == str(staged):
            source["path"] = kept
    write_manifest(out, manifest)


def _prepare_shards(args: argparse.Namespace, out: Path, negatives_file: Path, qrels_path: Path, depth) -> None:
    from lead_dist.verbs import prepare

    prepare_args = ["--format", args.format, "--input", args.input, "--split", args.split, "--out", str(out),
                    "--negatives-run", str(negatives_file), "--depth", f"1:{depth[1] - depth[0] + 1}",
                    "--min-relevance", str(args.min_relevance), "--keep-without-negatives"]  # fmt: skip
    if args.format == "msmarco":
        prepare_args += ["--qrels", str(qrels_path)]
    if args.shards:
        prepare_args += ["--shards", str(args.shards)]
    if args.overwrite:
        prepare_args.append("--overwrite")
    parser = argparse.ArgumentParser(prog="lead-dist prepare")
    prepare.add_arguments(parser)
    prepare.run(parser.parse_args(prepare_args))  # bad input raises: one line from lead_dist.cli, exit code 2
