"""Search: each rank indexes the shards it holds, searches every query, and the per-rank top-k lists are merged.
No rank ever holds more than its own share of the corpus's vectors (read shard by shard into its index); what
crosses ranks is each rank's top-k ids and scores per query.

Inner-product top-k is decomposable: the global top-k lies in the union of every shard's top-k, so merging the
per-rank lists (keeping the maximum scores) gives exactly the single-index answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lead_dist.distributed import all_gather_objects
from lead_dist.retrieval.index_base import SearchResult, merge_topk
from lead_dist.retrieval.indexes import make_index
from lead_dist.retrieval.store import iter_shards, read_manifest, shards_of_rank
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
    blocks = zip(vectors, ids, strict=True)
    return search_blocks(blocks, queries, k, backend=backend, factory=factory, device=device, fp16=fp16,
                         search_params=search_params)  # fmt: skip


def search_blocks(
    blocks: Iterable[tuple[np.ndarray, Sequence[str]]],
    queries: np.ndarray,
    k: int,
    *,
    backend: str = "torch",
    **index_options,
) -> SearchResult:
    """Add (vectors, ids) blocks to one index as they come, then search: a caller that reads the blocks lazily
    holds one block beside the index, never a second copy of its share of the corpus."""
    index = make_index(backend, queries.shape[1], **index_options)
    for block, block_ids in blocks:
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
    shards = iter_shards(folder, shards_of_rank(manifest["num_shards"], rank, world))  # read one at a time
    return gather_and_merge(search_blocks(shards, queries, k, **index_options), k)
