"""What every index backend offers, and the merge of several top-k lists into one.

Scores are inner products (cosine when the encoder normalises): higher is better, so a merge keeps the maximum.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class SearchResult:
    """Top-k of each query. Rows are best first; a row shorter than k (index too small) is padded with -inf / ""."""

    scores: np.ndarray  # [Q, k] float32
    doc_ids: np.ndarray  # [Q, k] object (str)

    def as_run(self, query_ids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """The TREC-run shape {qid: [(docid, score), ...]}, padding dropped."""
        if len(query_ids) != self.scores.shape[0]:
            raise ValueError(f"{len(query_ids)} query ids for {self.scores.shape[0]} result rows")
        run = {}
        for row, qid in enumerate(query_ids):
            run[qid] = [
                (str(docid), float(score))
                for docid, score in zip(self.doc_ids[row], self.scores[row], strict=True)
                if np.isfinite(score)
            ]
        return run


class DenseIndex(ABC):
    """An inner-product index over passage vectors with string ids."""

    dim: int

    @abstractmethod
    def add(self, embeddings: np.ndarray, ids: Sequence[str]) -> None:
        """Add vectors [N, dim] with their ids. Trained backends (IVF, PQ) train on the first call: pass a whole shard."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-k passages per query row of `queries` [Q, dim]."""

    @abstractmethod
    def __len__(self) -> int: ...

    def _check_dim(self, array: np.ndarray, what: str) -> None:
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(
                f"dimension mismatch: {what} have shape {tuple(array.shape)} but the index holds {self.dim}-d vectors "
                "(was the index built by another model?)"
            )


def pad_result(scores: np.ndarray, doc_ids: np.ndarray, k: int) -> SearchResult:
    """Pad rows with -inf / "" up to k columns so results of small shards can be stacked and merged."""
    missing = k - scores.shape[1]
    if missing > 0:
        scores = np.concatenate([scores, np.full((scores.shape[0], missing), -np.inf, np.float32)], axis=1)
        doc_ids = np.concatenate([doc_ids, np.full((doc_ids.shape[0], missing), "", dtype=object)], axis=1)
    return SearchResult(scores.astype(np.float32, copy=False), doc_ids)


def merge_topk(results: Sequence[SearchResult], k: int) -> SearchResult:
    """Merge per-shard top-k lists of the same queries into one top-k (max inner product wins).

    Exact as long as each shard returned its own top-k: the global top-k is a subset of their union.
    Ties are ordered by shard order then position (a stable sort), which is deterministic.
    """
    if not results:
        raise ValueError("merge_topk needs at least one result")
    num_queries = results[0].scores.shape[0]
    if any(r.scores.shape[0] != num_queries for r in results):
        raise ValueError("merge_topk: results cover different numbers of queries")
    scores = np.concatenate([r.scores for r in results], axis=1)
    doc_ids = np.concatenate([r.doc_ids for r in results], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return pad_result(np.take_along_axis(scores, order, axis=1), np.take_along_axis(doc_ids, order, axis=1), k)
