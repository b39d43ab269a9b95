"""Reading the corpus shards and evaluation files of a prepared folder (for encoding and evaluation)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lead_dist.data.manifest import read_manifest
from lead_dist.data.readers.qrels import read_qrels
from lead_dist.data.shards import read_shard


def read_corpus_shards(folder: str | Path, shard_indices: list[int] | None = None) -> Iterator[dict]:
    """Corpus records {"id","title","text"} in corpus order (or only the given shards, e.g. one rank's share)."""
    folder = Path(folder)
    shards = read_manifest(folder)["shards"]["corpus"]
    chosen = range(len(shards)) if shard_indices is None else shard_indices
    for index in chosen:
        entry = shards[index]
        yield from read_shard(folder / entry["name"], expected_count=entry["count"])


def read_eval_queries(folder: str | Path) -> list[dict]:
    """The prepared split's judged queries, [{"id","text"}], from queries.jsonl."""
    path = Path(folder) / read_manifest(folder)["evaluation"]["queries"]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def read_eval_qrels(folder: str | Path) -> dict[str, dict[str, int]]:
    """{qid: {pid: score}} from the prepared qrels.tsv (scores as integers, as pytrec_eval wants)."""
    return read_qrels(Path(folder) / read_manifest(folder)["evaluation"]["qrels"])
