"""`lead-dist prepare`: read a retrieval dataset into training shards, corpus shards, evaluation files and a manifest.

    lead-dist prepare --format beir --input ../shared/data/scifact --split train --out shards/sf
    lead-dist prepare --format beir --input https://.../scifact.zip --sha256 HEX --out shards/sf   # a BEIR zip
    lead-dist prepare --format beir --input DIR --negatives-run run.trec --depth 3:100 --out shards/x
    lead-dist prepare --format msmarco --input msmarco/ --split train --triples qidpidtriples.tsv --out shards/mm
    lead-dist prepare --format reference --input train.json --passages psgs.tsv --out shards/ref
    lead-dist prepare --format demo --out shards/demo

The work is `lead_dist.data.prepare.prepare(args)`; this module holds the flags. Bad input raises, and
`lead_dist.cli` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lead_dist.data.prepare import prepare
from lead_dist.data.sources import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=FORMATS, help="input format")
    parser.add_argument(
        "--input",
        help="BEIR/MS MARCO folder, a BEIR zip (file or http(s) URL), reference JSON, or (demo) where to write it",
    )
    parser.add_argument("--sha256", help="the sha256 a BEIR zip given as --input must have (checked; cache reused)")
    parser.add_argument("--out", required=True, help="output folder (shards, queries.jsonl, qrels.tsv, manifest)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (whole, atomically)")
    parser.add_argument("--split", default="train", help="qrels split to prepare (default train)")
    parser.add_argument("--passages", help="reference format: passage tsv (id<TAB>text<TAB>title, 1-based)")
    parser.add_argument("--id-offset", type=int, default=0, help="reference format: added to JSON passage ids")
    parser.add_argument("--collection", help="msmarco: collection.tsv (default <input>/collection.tsv)")
    parser.add_argument("--queries", help="msmarco: queries tsv (default <input>/queries.<split>.tsv)")
    parser.add_argument("--qrels", help="msmarco: qrels (default <input>/qrels.<split>.tsv)")
    parser.add_argument("--triples", help="msmarco: id triples qid<TAB>pos<TAB>neg as the negative source")
    parser.add_argument("--negative-lists", help="msmarco: qid<TAB>pid,pid,... as the negative source")
    parser.add_argument("--negatives-run", help="TREC run file as the negative source (positives removed)")
    parser.add_argument("--depth", default="1:100", help="run positions FIRST:LAST (1-based, inclusive) kept")
    parser.add_argument("--shards", type=int, help="number of training shards (default: 8, or ~5000 per shard)")
    parser.add_argument("--corpus-shard-size", type=int, default=50_000, help="passages per corpus shard")
    parser.add_argument("--no-corpus", action="store_true", help="skip the corpus shards")
    parser.add_argument("--seed", type=int, default=0, help="seed of the one-time shuffle of training examples")
    parser.add_argument("--min-relevance", type=float, default=1, help="judgement score that counts as positive")
    parser.add_argument(
        "--max-drop-share", type=float, default=0.05, help="fail when a larger share of any input kind is dropped"
    )
    parser.add_argument(
        "--keep-without-negatives", action="store_true", help="keep queries whose negative list ends up empty"
    )


def run(args: argparse.Namespace) -> int:
    manifest = prepare(args)  # bad input raises: one line from lead_dist.cli (with --debug, its traceback), exit 2
    drops = sum(sum(reasons.values()) for reasons in manifest["drops"]["counts"].values())
    print(
        f"prepared {manifest['num_queries']} training queries ({manifest['num_positive_pairs']} positive pairs, "
        f"negatives/query {manifest['negatives_per_query']['mean']}) in {len(manifest['shards']['train'])} shards, "
        f"{manifest['num_passages']} passages in {len(manifest['shards']['corpus'])} corpus shards, "
        f"{drops} drops; manifest {Path(args.out) / 'manifest.json'}"
    )
    return 0
