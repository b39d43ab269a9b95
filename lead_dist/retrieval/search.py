"""Search: each rank indexes the shards it holds, searches every query, and the per-rank top-k lists are merged.

Inner-product top-k is decomposable: the global top-k lies in the union of every shard's top-k, so merging the
per-rank lists (keeping the maximum scores) gives exactly the single-index answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lead_dist.distributed import all_gather_objects
from lead_dist.retrieval.index_base import SearchResult, merge_topk
from lead_dist.retrieval.indexes import make_index
from lead_dist.retrieval.store import rank_shards, read_manifest
from lead_dist.retrieval.text_encoder import TextEncoder


def check_compatible(manifest: dict, encoder: TextEncoder, folder: str | Path) -> None:
    """Refuse to search an index with query vectors of another model or another width."""
    if manifest["dim"] != encoder.dim:
        raise ValueError(
            f"dimension mismatch: {folder} holds {manifest['dim']}-d passage vectors but the model makes "
            f"{encoder.dim}-d vectors"
        )
    if manifest["fingerprint"] != encoder.fingerprint:
        raise ValueError(
            f"{folder} was built by another model (fingerprint {manifest['fingerprint']}, this model "
            f"{encoder.fingerprint}): encode the corpus with this model first"
        )


def search_local(
    vectors: Sequence[np.ndarray],
    ids: Sequence[Sequence[str]],
    queries: np.ndarray,
    k: int,
    *,
    backend: str = "torch",
    factory: str = "Flat",
    device: str | None = None,
    fp16: bool = False,
    search_params: str | None = None,
) -> SearchResult:
    """Index the given passage blocks in one index and return the top-k of every query."""
    index = make_index(
        backend, queries.shape[1], factory=factory, device=device, fp16=fp16, search_params=search_params
    )
    for block, block_ids in zip(vectors, ids, strict=True):
        if len(block_ids):
            index.add(block, block_ids)
    return index.search(queries, k)


def gather_and_merge(local: SearchResult, k: int) -> SearchResult:
    """Merge every rank's top-k of the same queries; every rank gets the merged result."""
    return merge_topk(all_gather_objects(local), k)


def search_folder(
    folder: str | Path,
    queries: np.ndarray,
    k: int,
    *,
    rank: int = 0,
    world: int = 1,
    **index_options,
) -> SearchResult:
    """Search an embeddings folder: this rank indexes its own block of shards; results merged across ranks."""
    manifest = read_manifest(folder)
    if queries.shape[1] != manifest["dim"]:
        raise ValueError(
            f"dimension mismatch: {folder} holds {manifest['dim']}-d vectors, queries are {queries.shape[1]}-d"
        )
    share = rank_shards(folder, rank, world)
    return gather_and_merge(search_local(share.vectors, share.ids, queries, k, **index_options), k)
