"""faiss backend: any `index_factory` string (Flat, IVF4096,Flat, HNSW32, IVF1024,PQ64, ...) with inner product.

GPU: only when the installed faiss has GPU support (faiss-cpu has no StandardGpuResources: guarded with hasattr);
then the index is sharded over all GPUs, with fp16 storage only when asked (it lowers recall a little).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lead_dist.retrieval.index_base import DenseIndex, SearchResult, pad_result


def faiss_gpu_count() -> int:
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    return int(faiss.get_num_gpus())


class FaissIndex(DenseIndex):
    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        *,
        use_gpu: bool = False,
        gpu_fp16: bool = False,
        search_params: str | None = None,
    ) -> None:
        import faiss

        self.dim = dim
        self.factory = factory
        try:
            self._index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ValueError(f"faiss could not build index_factory string {factory!r}: {err}") from err
        self.search_params = search_params
        self._on_gpu = False
        if use_gpu:
            if faiss_gpu_count() == 0:
                raise RuntimeError("faiss GPU search asked for, but this faiss build has no GPUs (use --backend torch)")
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True  # each GPU holds a slice of the corpus, results merged by faiss
            options.useFloat16 = gpu_fp16
            self._index = faiss.index_cpu_to_all_gpus(self._index, co=options)
            self._on_gpu = True
        self._ids: list[str] = []

    def add(self, embeddings: np.ndarray, ids: Sequence[str]) -> None:
        self._check_dim(embeddings, "passage vectors")
        if len(ids) != embeddings.shape[0]:
            raise ValueError(f"{len(ids)} ids for {embeddings.shape[0]} vectors")
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if not self._index.is_trained:
            # IVF/PQ need training data; the first shard added is the sample.
            self._index.train(vectors)
        self._index.add(vectors)
        self._ids.extend(str(i) for i in ids)

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        import faiss

        self._check_dim(queries, "query vectors")
        if self.search_params:
            faiss.ParameterSpace().set_index_parameters(self._index, self.search_params)
        k_eff = min(k, len(self._ids))
        if k_eff == 0:
            return pad_result(np.zeros((queries.shape[0], 0), np.float32), np.empty((queries.shape[0], 0), object), k)
        scores, positions = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k_eff)
        ids = np.asarray(self._ids, dtype=object)
        # approximate indexes may return -1 when a probe finds fewer than k vectors
        doc_ids = np.where(positions >= 0, ids[np.maximum(positions, 0)], "")
        scores = np.where(positions >= 0, scores, -np.inf).astype(np.float32)
        return pad_result(scores, doc_ids.astype(object), k)
