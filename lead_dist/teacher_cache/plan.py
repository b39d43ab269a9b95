"""What a teacher cache holds: every text (or pair) training can draw, cut into shards, the same on every rank.

Training draws, per epoch, one positive and n negatives from each record's `pos_ids` / `neg_ids` (data/sampling.py),
so the cache covers every query and every listed positive and negative of every record of the training shards:

    de, cb   one entry per query id (family "query") and one per passage id (family "passage")
    ce       one entry per (query id, passage id) pair of a record (family "pair"): a cross encoder scores only
             the query's own group, so only those pairs can ever be asked for

Entries keep the order of their first appearance (shards in manifest order, records in shard order), and each family
is cut into shards of `shard_size` entries: the plan is a pure function of the training shards, which is what makes
a resumed or multi-rank build byte-identical to a one-process one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator

from lead_dist.config import Config

FAMILIES = {"de": ("query", "passage"), "cb": ("query", "passage"), "ce": ("pair",)}


def pair_key(qid: str, pid: str) -> str:
    """The id of a cross-encoder entry: a JSON pair, so any characters in either id stay unambiguous."""
    return json.dumps([qid, pid], ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One text (or pair) to run the teacher on: `key` is its id in the cache."""

    key: str
    query: str = ""  # de/cb queries, ce pairs
    title: str = ""  # de/cb passages, ce pairs
    text: str = ""  # de/cb passages, ce pairs


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    family: str
    index: int
    entries: tuple[Entry, ...]

    @property
    def name(self) -> str:
        return f"{self.family}-{self.index:06d}.safetensors"


def training_records(config: Config) -> Iterator[dict]:
    """Every record of the training shards, shards in manifest order (local folders, URLs and lists alike)."""
    from lead_dist.data.stream import TrainStream

    assert config.data.train is not None, "config validation requires data.train"
    stream = TrainStream(
        config.data.train,
        batch_size=1,
        num_negatives=config.data.num_negatives,
        seed=config.seed,
        manifest=config.data.manifest,
        retries=config.data.retries,
        retry_backoff_s=config.data.retry_backoff_s,
    )
    for name, count in stream.shards:
        yield from stream.records(name, count)


def collect_entries(config: Config, kind: str) -> dict[str, list[Entry]]:
    """The entries of every family of `kind` over the config's training shards (see `entries_of_records`)."""
    return entries_of_records(training_records(config), kind)


def entries_of_records(records: Iterable[dict], kind: str) -> dict[str, list[Entry]]:
    """The entries of every family of `kind`, each id once, in order of first appearance."""
    seen: dict[str, dict[str, Entry]] = {family: {} for family in FAMILIES[kind]}
    for record in records:
        passages = list(
            zip(
                [*record["pos_ids"], *record["neg_ids"]],
                [*record["pos_titles"], *record["neg_titles"]],
                [*record["pos_texts"], *record["neg_texts"]],
                strict=True,
            )
        )
        if kind == "ce":
            for pid, title, text in passages:
                key = pair_key(record["qid"], pid)
                seen["pair"].setdefault(key, Entry(key, query=record["query"], title=title, text=text))
            continue
        seen["query"].setdefault(record["qid"], Entry(record["qid"], query=record["query"]))
        for pid, title, text in passages:
            seen["passage"].setdefault(pid, Entry(pid, title=title, text=text))
    return {family: list(entries.values()) for family, entries in seen.items()}


def plan_shards(entries: dict[str, list[Entry]], shard_size: int) -> list[ShardPlan]:
    """Each family cut into shards of `shard_size` entries, families in FAMILIES order."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    plans = []
    for family, items in entries.items():
        for index, start in enumerate(range(0, len(items), shard_size)):
            plans.append(ShardPlan(family, index, tuple(items[start : start + shard_size])))
    return plans
