"""FLOPs of one training step, counted from model shapes and token counts, and an MFU estimate.

Counting rule (one multiply-add = 2 FLOPs; only matmuls, which dominate a transformer):
    per block, for a batch of B sequences of (padded) length T and hidden size h, FFN size f:
        projections  2 * B*T * (4*h*h + 2*h*f)        Q, K, V and output (4 h x h) + FFN up and down (2 h x f)
        attention    4 * B*T*T * h                    scores Q K^T and the weighted sum A V (2 * 2 B T T h)
    forward of a model = num_layers * per block (embeddings, layer norms, softmax, pooling are ignored)
    backward = 2 x forward, so a trained model costs 3 x forward per step, a frozen teacher 1 x forward.
Late-interaction (ColBERT) scoring, every query token against every candidate token, is counted too
(`maxsim_flops`, as `ModelWork.scoring`): with global candidates it is comparable to a forward pass. It is x3 when
the ColBERT is trained, x1 when frozen (live or cached: a cached ColBERT teacher encodes nothing but still scores).
A dual encoder's dot products are negligible and ignored.

The counts are per process (per rank): pass this rank's token counts, divide by this rank's step time and by one
device's peak to get MFU. `peak_matmul_flops` measures that peak by timing a large matmul once per process
(CPU peaks are not on a datasheet; on GPUs a measured dense peak is also closer to what is reachable).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class TransformerShape:
    """The sizes that determine a transformer encoder's matmul FLOPs."""

    num_layers: int
    hidden_size: int
    intermediate_size: int

    @classmethod
    def from_config(cls, config: Any) -> TransformerShape:
        """From a transformers config (BERT-style names, with DistilBERT's names as fallback)."""

        def first(*names: str) -> int:
            for name in names:
                value = getattr(config, name, None)
                if value is not None:
                    return int(value)
            raise ValueError(f"{type(config).__name__} has none of {names}; cannot count FLOPs for it")

        return cls(
            num_layers=first("num_hidden_layers", "n_layers", "num_layers"),
            hidden_size=first("hidden_size", "dim", "d_model"),
            intermediate_size=first("intermediate_size", "hidden_dim", "ffn_dim"),
        )

    @classmethod
    def of_model(cls, model: torch.nn.Module) -> TransformerShape:
        """From a lead_dist model (its `.backbone.config`) or a bare transformers model (its `.config`)."""
        from lead_dist.distributed import unwrap

        inner = unwrap(model)  # DDP / DeepSpeed / torch.compile wrappers
        backbone = getattr(inner, "backbone", inner)
        config = getattr(backbone, "config", None)
        if config is None:
            raise ValueError(f"{type(inner).__name__} has no .backbone.config or .config; cannot count FLOPs")
        return cls.from_config(config)


def block_forward_flops(shape: TransformerShape, batch: int, seq_len: int) -> int:
    """Forward matmul FLOPs of ONE transformer block on `batch` sequences of length `seq_len`."""
    h, f, tokens = shape.hidden_size, shape.intermediate_size, batch * seq_len
    projections = 2 * tokens * (4 * h * h + 2 * h * f)
    attention = 4 * batch * seq_len * seq_len * h
    return projections + attention


def forward_flops(shape: TransformerShape, input_shapes: Iterable[Sequence[int]]) -> int:
    """Forward FLOPs of the whole encoder over several inputs, each given as its (batch, padded length) shape."""
    return sum(shape.num_layers * block_forward_flops(shape, int(b), int(t)) for b, t in input_shapes)


@dataclasses.dataclass(frozen=True)
class ModelWork:
    """One model's share of a step: its shape (None for a model that encodes nothing, a cached teacher), the
    (batch, length) of every input it encodes, trained or frozen, and the forward FLOPs of its scoring counted apart
    (`scoring`: a ColBERT's MaxSim, `maxsim_flops`)."""

    shape: TransformerShape | None
    input_shapes: tuple[tuple[int, int], ...]
    trained: bool
    scoring: int = 0

    @property
    def flops(self) -> int:
        encoder = forward_flops(self.shape, self.input_shapes) if self.shape is not None else 0
        # backward = grad w.r.t. activations + grad w.r.t. weights (or of both MaxSim operands), each as costly as
        # the forward
        return (3 if self.trained else 1) * (encoder + self.scoring)


def late_interaction_flops(
    num_queries: int, num_candidates: int, query_len: int, passage_len: int, dim: int, num_scores: int = 1
) -> int:
    """ColBERT MaxSim: every query token against every candidate token, for `num_scores` layers (forward only)."""
    return 2 * num_queries * num_candidates * query_len * passage_len * dim * num_scores


def maxsim_flops(
    queries: tuple[int, int], passages: tuple[int, int], candidates_per_passage: int, dims: Sequence[int]
) -> int:
    """Forward FLOPs of a ColBERT's scores in one micro-batch: its (queries, padded length) against (passages,
    padded length) x `candidates_per_passage` (the world size when passages are gathered from every rank: global
    candidates; 1 for the own group, which `ColBERT.score` still computes against the rank's passages and cuts),
    once per token width in `dims` (the final score's, then each scored layer's). Padded positions are counted:
    the einsum multiplies them too. Gathered passages are padded to the longest on any rank; this rank's length
    stands for it."""
    (num_queries, query_len), (num_passages, passage_len) = queries, passages
    candidates = num_passages * candidates_per_passage
    return sum(late_interaction_flops(num_queries, candidates, query_len, passage_len, dim) for dim in dims)


def step_flops(works: Iterable[ModelWork], extra_flops: int = 0) -> int:
    """FLOPs of one optimizer step on this rank: the models' work plus anything counted apart."""
    return sum(work.flops for work in works) + int(extra_flops)


def tensor_shape(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(batch, padded length) of a tokenized batch, from its input_ids."""
    ids = batch["input_ids"]
    if ids.dim() != 2:
        raise ValueError(f"expected input_ids of shape [batch, length], got {tuple(ids.shape)}")
    return int(ids.shape[0]), int(ids.shape[1])


def _default_size(device: torch.device) -> int:
    # Big enough that launch overhead is noise, small enough to measure in about a second on a 2-core CPU.
    return 8192 if device.type == "cuda" else 1024


@functools.cache
def _measure_peak(dtype: torch.dtype, device_str: str, size: int, repeats: int) -> float:
    device = torch.device(device_str)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.matmul(a, b)  # warm-up: kernel selection, thread pool start
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_matmul_flops(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    size: int | None = None,
    repeats: int = 3,
) -> float:
    """Measured dense matmul FLOP/s of one device in `dtype` (best of `repeats`), cached per process."""
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _measure_peak(dtype, str(device), size or _default_size(device), repeats)


def mfu(step_flops: float, seconds: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak. 0 when time or peak is not positive."""
    if seconds <= 0 or peak_flops <= 0:
        return 0.0
    return float(step_flops) / seconds / peak_flops
