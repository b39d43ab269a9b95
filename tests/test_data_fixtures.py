"""Helpers shared by the tests/test_data_*.py files (no tests here): small BEIR folders and prepare runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lead_dist.data import prepare as prepare_module
from lead_dist.verbs import prepare as prepare_verb


def write_beir(
    folder: Path,
    *,
    num_queries: int,
    num_passages: int,
    positives: dict[str, list[str]] | None = None,
    split: str = "train",
) -> dict[str, list[str]]:
    """A BEIR folder with passages p0.. and queries q0..; by default query i's positive is passage i."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as handle:
        for i in range(num_passages):
            handle.write(json.dumps({"_id": f"p{i}", "title": f"title {i}", "text": f"text of passage {i}"}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for i in range(num_queries):
            handle.write(json.dumps({"_id": f"q{i}", "text": f"query number {i}"}) + "\n")
    if positives is None:
        positives = {f"q{i}": [f"p{i % num_passages}"] for i in range(num_queries)}
    with (folder / "qrels" / f"{split}.tsv").open("w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, pids in positives.items():
            for pid in pids:
                handle.write(f"{qid}\t{pid}\t1\n")
    return positives


def prepare_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prepare_verb.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def run_prepare(*argv: str) -> dict:
    return prepare_module.prepare(prepare_args(*argv))
