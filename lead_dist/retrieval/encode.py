"""Encoding texts to vectors fast: length-sorted batches with dynamic padding, inference mode, optional autocast.

Why sorting matters: a batch is padded to its longest member, so mixing a 20-token and a 256-token passage wastes
most of the matmul. Texts are ordered by character length (a free proxy), tokenized in blocks, re-sorted by their
exact token length inside each block and cut into batches whose padding is trimmed to the batch's longest text.
Vectors come back in the input order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lead_dist.retrieval.text_encoder import TextEncoder

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOKENIZE_BLOCK = 4096  # texts tokenized at once: bounds the padded token tensor, keeps sorting nearly global

Tokenize = Callable[[Sequence[int]], dict[str, torch.Tensor]]


def _trim(batch: dict[str, torch.Tensor], length: int, padding_side: str) -> dict[str, torch.Tensor]:
    """Cut the padding columns no text of this batch needs."""
    cut = slice(None, length) if padding_side == "right" else slice(-length, None)
    return {key: (value[:, cut] if value.dim() == 2 else value) for key, value in batch.items()}


@torch.inference_mode()
def encode_sorted(
    encoder: TextEncoder,
    tokenize: Tokenize,
    char_lengths: Sequence[int],
    *,
    batch_size: int = 64,
    dtype: str = "fp32",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Encode items 0..N-1 (tokenized on demand by `tokenize(indices)`) into float32 [N, dim], input order."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    count = len(char_lengths)
    out = np.zeros((count, encoder.dim), dtype=np.float32)
    device = encoder.device
    # longest first: a batch that does not fit in memory fails in the first seconds, not at the end
    order = np.argsort(-np.asarray(char_lengths, dtype=np.int64), kind="stable")
    autocast = torch.autocast(device_type=device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")
    for block_start in range(0, count, TOKENIZE_BLOCK):
        block = order[block_start : block_start + TOKENIZE_BLOCK]
        tokens = tokenize(block.tolist())
        lengths = tokens["attention_mask"].sum(dim=1)
        by_length = torch.argsort(lengths, descending=True, stable=True)
        for start in range(0, len(block), batch_size):
            rows = by_length[start : start + batch_size]
            batch = {key: value[rows] for key, value in tokens.items()}
            batch = _trim(batch, int(lengths[rows].max()), encoder.padding_side)
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with autocast:
                vectors = encoder.embed(batch)
            out[block[rows.numpy()]] = vectors.float().cpu().numpy()
            if progress is not None:
                progress(len(rows))
    return out


def encode_passages(
    encoder: TextEncoder,
    records: Sequence[dict[str, str]],
    *,
    max_length: int = 256,
    batch_size: int = 64,
    dtype: str = "fp32",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Vectors [N, dim] of corpus records {"id", "title", "text"}, in record order."""

    def tokenize(indices: Sequence[int]) -> dict[str, torch.Tensor]:
        chosen = [records[i] for i in indices]
        return encoder.tokenize_passages([r["title"] for r in chosen], [r["text"] for r in chosen], max_length)

    lengths = [len(r["title"]) + len(r["text"]) for r in records]
    return encode_sorted(encoder, tokenize, lengths, batch_size=batch_size, dtype=dtype, progress=progress)


def encode_queries(
    encoder: TextEncoder,
    texts: Sequence[str],
    *,
    max_length: int = 64,
    batch_size: int = 128,
    dtype: str = "fp32",
) -> np.ndarray:
    """Vectors [Q, dim] of query texts, in input order."""

    def tokenize(indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return encoder.tokenize_queries([texts[i] for i in indices], max_length)

    return encode_sorted(encoder, tokenize, [len(t) for t in texts], batch_size=batch_size, dtype=dtype)


def _count_longer(
    tokenize: Callable[[Sequence[int], int], dict[str, torch.Tensor]], count: int, max_length: int
) -> int:
    """How many of items 0..N-1 have more than `max_length` tokens: tokenized (not encoded) at max_length + 1, an
    item that fills all max_length + 1 positions is one that `max_length` cuts."""
    longer = 0
    for start in range(0, count, TOKENIZE_BLOCK):
        mask = tokenize(range(start, min(count, start + TOKENIZE_BLOCK)), max_length + 1)["attention_mask"]
        longer += int((mask.sum(dim=1) > max_length).sum())
    return longer


def count_truncated_queries(encoder: TextEncoder, texts: Sequence[str], max_length: int) -> int:
    """Queries that `max_length` truncates (for the input report)."""
    return _count_longer(
        lambda rows, length: encoder.tokenize_queries([texts[i] for i in rows], length), len(texts), max_length
    )


def count_truncated_passages(encoder: TextEncoder, records: Sequence[dict[str, str]], max_length: int) -> int:
    """Passages (title and text as the encoder joins them) that `max_length` truncates."""

    def tokenize(rows: Sequence[int], length: int) -> dict[str, torch.Tensor]:
        chosen = [records[i] for i in rows]
        return encoder.tokenize_passages([r["title"] for r in chosen], [r["text"] for r in chosen], length)

    return _count_longer(tokenize, len(records), max_length)


class Throughput:
    """Progress callback that prints passages done and passages/s at most every `every_s` seconds."""

    def __init__(self, total: int, label: str = "encode", every_s: float = 10.0, enabled: bool = True) -> None:
        self.total, self.label, self.every_s, self.enabled = total, label, every_s, enabled
        self.done = 0
        self.start = self.last = time.perf_counter()

    def __call__(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every_s or self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            print(f"[{self.label}] {self.done}/{self.total} passages, {rate:.1f} passages/s", flush=True)

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)
