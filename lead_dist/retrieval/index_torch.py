"""Exact inner-product search with torch: chunked matmul + top-k, on any device torch sees (CPU or GPU).

Memory is bounded by `corpus_chunk x query_chunk` scores at a time; the running top-k is merged chunk by chunk, so a
corpus larger than one matmul still gives the exact answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from lead_dist.retrieval.index_base import DenseIndex, SearchResult, pad_result


class TorchExactIndex(DenseIndex):
    def __init__(
        self,
        dim: int,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        corpus_chunk: int = 1_000_000,
        query_chunk: int = 4096,
    ) -> None:
        self.dim = dim
        self.device = torch.device(device) if device is not None else _default_device()
        # fp16/bf16 storage halves memory at a small cost in score precision: only when asked.
        self.dtype = dtype
        self.corpus_chunk = corpus_chunk
        self.query_chunk = query_chunk
        self._parts: list[torch.Tensor] = []  # one per add(), never concatenated: no second copy of the corpus
        self._ids: list[str] = []

    def add(self, embeddings: np.ndarray, ids: Sequence[str]) -> None:
        self._check_dim(embeddings, "passage vectors")
        if len(ids) != embeddings.shape[0]:
            raise ValueError(f"{len(ids)} ids for {embeddings.shape[0]} vectors")
        self._parts.append(torch.from_numpy(np.ascontiguousarray(embeddings)).to(self.device, self.dtype))
        self._ids.extend(str(i) for i in ids)

    def __len__(self) -> int:
        return len(self._ids)

    def _chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(offset, rows) slices of at most `corpus_chunk` rows, part by part."""
        offset = 0
        for part in self._parts:
            for start in range(0, part.shape[0], self.corpus_chunk):
                yield offset + start, part[start : start + self.corpus_chunk]
            offset += part.shape[0]

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        self._check_dim(queries, "query vectors")
        k_eff = min(k, len(self._ids))
        all_scores, all_positions = [], []
        q_all = torch.from_numpy(np.ascontiguousarray(queries)).to(self.device, self.dtype)
        for q_start in range(0, q_all.shape[0], self.query_chunk):
            q = q_all[q_start : q_start + self.query_chunk]
            best_scores = torch.full((q.shape[0], 0), float("-inf"), device=self.device)
            best_positions = torch.zeros((q.shape[0], 0), dtype=torch.long, device=self.device)
            for c_start, chunk in self._chunks():
                scores = (q @ chunk.T).float()
                top = torch.topk(scores, min(k_eff, chunk.shape[0]), dim=1)
                # merge the running best with this chunk's best; only the union can hold the overall top-k
                merged_scores = torch.cat([best_scores, top.values], dim=1)
                merged_positions = torch.cat([best_positions, top.indices + c_start], dim=1)
                keep = torch.topk(merged_scores, min(k_eff, merged_scores.shape[1]), dim=1)
                best_scores = keep.values
                best_positions = torch.gather(merged_positions, 1, keep.indices)
            all_scores.append(best_scores.cpu())
            all_positions.append(best_positions.cpu())
        scores = torch.cat(all_scores).numpy() if all_scores else np.zeros((0, k_eff), np.float32)
        positions = torch.cat(all_positions).numpy() if all_positions else np.zeros((0, k_eff), np.int64)
        ids = np.asarray(self._ids, dtype=object)
        doc_ids = ids[positions] if positions.size else np.empty(positions.shape, dtype=object)
        return pad_result(scores, doc_ids, k)


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
