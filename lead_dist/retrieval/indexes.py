"""Pick an index backend by name (the CLI's --backend)."""

from __future__ import annotations

from lead_dist.retrieval.index_base import DenseIndex
from lead_dist.retrieval.index_faiss import FaissIndex, faiss_gpu_count

BACKENDS = ("torch", "faiss", "faiss-gpu")


def make_index(
    backend: str,
    dim: int,
    *,
    factory: str = "Flat",
    device: str | None = None,
    fp16: bool = False,
    search_params: str | None = None,
) -> DenseIndex:
    """Build an empty index: backend "torch" (exact) or "faiss" (CPU, or all GPUs when faiss has them)."""
    if backend == "torch":
        import torch

        from lead_dist.retrieval.index_torch import TorchExactIndex

        return TorchExactIndex(dim, device=device, dtype=torch.float16 if fp16 else torch.float32)
    if backend in ("faiss", "faiss-gpu"):
        use_gpu = backend == "faiss-gpu" or (device is not None and device.startswith("cuda") and faiss_gpu_count() > 0)
        return FaissIndex(dim, factory, use_gpu=use_gpu, gpu_fp16=fp16, search_params=search_params)
    raise ValueError(f"unknown index backend {backend!r}; expected 'torch', 'faiss' or 'faiss-gpu'")
