"""Re-ranking a first-stage run with any model kind: how a ColBERT-style (CB) or cross-encoder (CE) teacher is
evaluated, since neither is a single-vector retriever that `lead-dist evaluate` can search a corpus with.

Each query's top `depth` documents of the first-stage run are scored by the model and re-ordered; the re-ranked run
holds those `depth` documents only. So recall@depth of the re-ranked run equals the first stage's, and metrics cut
deeper than `depth` only see `depth` documents: results carry the first stage's metrics beside their own.

How each kind scores (the same functions its training loss uses, so re-ranking measures what was distilled):
* CE: one forward pass per (query, passage) pair, `[CLS] q [SEP] title [SEP] text [SEP]` cut to
  query + passage max length, as in training; pairs are sorted by passage length so batches carry little padding.
* DE and CB: every distinct candidate passage is encoded once (many queries share candidates), queries once, and
  the model's own `score` compares them (inner product x scale; late interaction for CB). CB passages keep only
  their unpadded token vectors between encoding and scoring.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from lead_dist.models.base import RetrievalModel
from lead_dist.models.reps import Reps
from lead_dist.retrieval.encode import DTYPES
from lead_dist.retrieval.runfile import Run

Progress = Callable[[int], None]


@dataclass
class RerankInputs:
    """What a re-ranking needs: query texts, each query's candidate ids in first-stage order, and the passages."""

    queries: Mapping[str, str]  # qid -> text
    candidates: Mapping[str, Sequence[str]]  # qid -> doc ids, first-stage order, already cut to depth
    passages: Mapping[str, Mapping[str, str]]  # doc id -> {"title", "text"}


def candidates_from_run(run: Run, depth: int, qids: Sequence[str]) -> dict[str, list[str]]:
    """The top `depth` doc ids of each of `qids` in `run` (a query the run lacks gets an empty list)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return {qid: [docid for docid, _score in run.get(qid, [])[:depth]] for qid in qids}


def _autocast(device: torch.device, dtype: str):
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _passage_length(passage: Mapping[str, str]) -> int:
    return len(passage.get("title", "")) + len(passage.get("text", ""))


@torch.inference_mode()
def _score_cross_encoder(
    model: RetrievalModel, inputs: RerankInputs, *, query_max_length: int, passage_max_length: int,
    batch_size: int, dtype: str, progress: Progress | None,
) -> dict[str, list[float]]:  # fmt: skip
    device = next(model.parameters()).device
    pairs = [(qid, i, docid) for qid, docids in inputs.candidates.items() for i, docid in enumerate(docids)]
    pairs.sort(key=lambda pair: -_passage_length(inputs.passages[pair[2]]))  # longest first: OOM shows early
    scores = {qid: [0.0] * len(docids) for qid, docids in inputs.candidates.items()}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        passages = [inputs.passages[docid] for _qid, _i, docid in chunk]
        batch = model.tokenize_pairs(
            [inputs.queries[qid] for qid, _i, _d in chunk], [p.get("title", "") for p in passages],
            [p.get("text", "") for p in passages], query_max_length + passage_max_length,
        )  # fmt: skip
        with _autocast(device, dtype):
            final, _layers = model(**_to(batch, device))
        for (qid, i, _docid), value in zip(chunk, final.float().cpu().tolist(), strict=True):
            scores[qid][i] = value
        if progress is not None:
            progress(len(chunk))
    return scores


def _encode(
    model: RetrievalModel, tokenize: Callable[[list[int]], dict[str, torch.Tensor]], lengths: Sequence[int],
    *, batch_size: int, dtype: str, progress: Progress | None = None,
) -> list[torch.Tensor]:  # fmt: skip
    """Per item, in input order: its final vector (DE) or its counted token vectors [T_i, D] (CB), fp32 on CPU."""
    device = next(model.parameters()).device
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[torch.Tensor | None] = [None] * len(lengths)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        with _autocast(device, dtype):
            reps = model(**_to(tokenize(rows), device))
        final = reps.final.float().cpu()
        mask = None if reps.mask is None else reps.mask.bool().cpu()
        for j, row in enumerate(rows):
            out[row] = final[j] if mask is None else final[j][mask[j]]
        if progress is not None:
            progress(len(rows))
    return out  # type: ignore[return-value]


def _stack(model: RetrievalModel, items: Sequence[torch.Tensor], device: torch.device) -> Reps:
    """Reps of encoded items for the model's `score`: DE [N, D]; CB zero-padded [N, T, D] with a token mask."""
    scale = float(getattr(model, "scale", 1.0))
    if model.kind == "de":
        final = torch.stack(list(items)).to(device)
        return Reps(final=final, layers=final.new_zeros((0, *final.shape)), mask=None, scale=scale)
    length = max(1, max(len(item) for item in items))
    final = items[0].new_zeros((len(items), length, items[0].shape[-1]))
    mask = torch.zeros((len(items), length), dtype=torch.long)
    for i, item in enumerate(items):
        final[i, : len(item)] = item
        mask[i, : len(item)] = 1
    final = final.to(device)
    return Reps(final=final, layers=final.new_zeros((0, *final.shape)), mask=mask.to(device), scale=scale)


@torch.inference_mode()
def _score_separately(
    model: RetrievalModel, inputs: RerankInputs, *, query_max_length: int, passage_max_length: int,
    batch_size: int, dtype: str, progress: Progress | None,
) -> dict[str, list[float]]:  # fmt: skip
    device = next(model.parameters()).device
    qids = list(inputs.candidates)
    docids = sorted({docid for qid in qids for docid in inputs.candidates[qid]})
    records = [inputs.passages[docid] for docid in docids]

    def tokenize_passages(rows: list[int]) -> dict[str, torch.Tensor]:
        chosen = [records[i] for i in rows]
        return model.tokenize_passages(
            [r.get("title", "") for r in chosen], [r.get("text", "") for r in chosen], passage_max_length
        )

    def tokenize_queries(rows: list[int]) -> dict[str, torch.Tensor]:
        return model.tokenize_queries([inputs.queries[qids[i]] for i in rows], query_max_length)

    encoded = _encode(model, tokenize_passages, [_passage_length(r) for r in records], batch_size=batch_size,
                      dtype=dtype, progress=progress)  # fmt: skip
    by_docid = dict(zip(docids, encoded, strict=True))
    queries = _encode(model, tokenize_queries, [len(inputs.queries[q]) for q in qids], batch_size=batch_size,
                      dtype=dtype)  # fmt: skip
    scores: dict[str, list[float]] = {}
    for qid, query in zip(qids, queries, strict=True):
        candidates = inputs.candidates[qid]
        if not candidates:
            scores[qid] = []
            continue
        q_reps = _stack(model, [query], device)
        p_reps = _stack(model, [by_docid[docid] for docid in candidates], device)
        final, _layers = type(model).score(q_reps, p_reps)
        scores[qid] = final[0].float().cpu().tolist()
    return scores


def rerank(
    model: RetrievalModel,
    inputs: RerankInputs,
    *,
    query_max_length: int = 64,
    passage_max_length: int = 256,
    batch_size: int = 64,
    dtype: str = "fp32",
    progress: Progress | None = None,
) -> tuple[Run, dict[str, float]]:
    """Score each query's candidates with `model` (any kind) and order them by score, best first.

    Returns the re-ranked run and timings. Ties keep the first stage's order (a stable sort). `progress` is called
    with the number of pairs (CE) or passages (DE, CB) done after each batch.
    """
    missing = sorted({d for docids in inputs.candidates.values() for d in docids} - set(inputs.passages))
    if missing:
        raise KeyError(f"{len(missing)} candidate documents are not in the corpus, e.g. {missing[:5]}")
    absent = sorted(set(inputs.candidates) - set(inputs.queries))
    if absent:
        raise KeyError(f"{len(absent)} queries with candidates have no text, e.g. {absent[:5]}")
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    score = _score_cross_encoder if model.kind == "ce" else _score_separately
    try:
        scores = score(
            model, inputs, query_max_length=query_max_length, passage_max_length=passage_max_length,
            batch_size=batch_size, dtype=dtype, progress=progress,
        )  # fmt: skip
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    run: Run = {}
    for qid, docids in inputs.candidates.items():
        ranked = sorted(zip(docids, scores[qid], strict=True), key=lambda item: -item[1])
        run[qid] = [(docid, float(value)) for docid, value in ranked]
    pairs = sum(len(docids) for docids in inputs.candidates.values())
    return run, {"rerank_s": seconds, "pairs": pairs, "pairs_per_s": pairs / max(seconds, 1e-9)}
