"""Data: source readers, deterministic shards, the training stream, per-model collation, the demo dataset.

Heavy imports (torch) happen only in `stream`; the rest is standard library.
"""

from __future__ import annotations

from lead_dist.data.collate import collate_for
from lead_dist.data.errors import DataFormatError, DropShareExceeded, ShardError
from lead_dist.data.manifest import read_manifest
from lead_dist.data.shards import read_shard, write_shard

__all__ = [
    "DataFormatError",
    "DropShareExceeded",
    "ShardError",
    "TrainStream",
    "collate_for",
    "read_corpus_shards",
    "read_manifest",
    "read_shard",
    "write_shard",
]


def __getattr__(name: str):
    # TrainStream imports torch; keep `import lead_dist.data` light for the prepare verb.
    if name == "TrainStream":
        from lead_dist.data.stream import TrainStream

        return TrainStream
    if name == "read_corpus_shards":
        from lead_dist.data.corpus import read_corpus_shards

        return read_corpus_shards
    raise AttributeError(name)
