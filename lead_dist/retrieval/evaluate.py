"""Evaluation, one pipeline for both callers: the judged queries are encoded, searched against this rank's share
of the encoded corpus, the ranks' top-k lists merged, and the run scored with pytrec_eval.

Where the corpus vectors come from is the only difference between the callers:
- `evaluate_model`, the hook the trainer calls on a dev subset every N steps, encodes its corpus list in memory
  (each rank its contiguous share);
- `lead-dist evaluate` (lead_dist/verbs/evaluate.py) encodes into a resumable embeddings folder and loads each
  rank's shards from it (`store.rank_shards`).
Both then call `evaluate_passages`, so the input report, the query encoding, the search, the merge and the metrics
are computed by the same code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from torch import nn

from lead_dist.data.readers.qrels import Qrels
from lead_dist.distributed import contiguous_share, unwrap, world_size
from lead_dist.distributed import rank as process_rank
from lead_dist.retrieval.encode import (
    Throughput,
    count_truncated_passages,
    count_truncated_queries,
    encode_passages,
    encode_queries,
)
from lead_dist.retrieval.index_base import SearchResult
from lead_dist.retrieval.metrics import DEFAULT_HIT_KS, score_run
from lead_dist.retrieval.search import gather_and_merge, search_local
from lead_dist.retrieval.sources import InputReport, check_inputs
from lead_dist.retrieval.store import RankPassages
from lead_dist.retrieval.text_encoder import TextEncoder, as_text_encoder


def encode_share(
    encoder: TextEncoder,
    corpus: Sequence[Mapping[str, str]],
    *,
    rank: int = 0,
    world: int = 1,
    passage_max_length: int = 256,
    batch_size: int = 64,
    dtype: str = "fp32",
    show_progress: bool = False,
) -> tuple[RankPassages, dict[str, float]]:
    """Encode this rank's contiguous share of `corpus` ({"id","title","text"} records) in memory."""
    records = [corpus[i] for i in contiguous_share(len(corpus), rank, world)]
    started = time.perf_counter()
    meter = Throughput(len(records), f"encode rank {rank}", enabled=show_progress)
    vectors = encode_passages(
        encoder, records, max_length=passage_max_length, batch_size=batch_size, dtype=dtype, progress=meter
    )
    seconds = time.perf_counter() - started
    timings = {"encode_passages_s": seconds, "passages_per_s": len(records) / max(seconds, 1e-9)}
    return RankPassages([vectors], [[r["id"] for r in records]]), timings


def search_queries(
    encoder: TextEncoder,
    query_texts: Sequence[str],
    passages: RankPassages,
    *,
    k: int = 1000,
    query_max_length: int = 64,
    query_batch_size: int = 128,
    dtype: str = "fp32",
    world: int = 1,
    **index_options,
) -> tuple[SearchResult, dict[str, float]]:
    """Encode the queries, search this rank's passages, merge the ranks' top-k (every rank calls it when world > 1)."""
    started = time.perf_counter()
    vectors = encode_queries(
        encoder, list(query_texts), max_length=query_max_length, batch_size=query_batch_size, dtype=dtype
    )
    timings = {"encode_queries_s": time.perf_counter() - started}
    started = time.perf_counter()
    local = search_local(passages.vectors, passages.ids, vectors, k, **index_options)
    result = gather_and_merge(local, k) if world > 1 else local
    timings["search_s"] = time.perf_counter() - started
    return result, timings


def retrieve(
    encoder: TextEncoder,
    query_texts: Sequence[str],
    corpus: Sequence[Mapping[str, str]],
    *,
    k: int = 1000,
    query_max_length: int = 64,
    passage_max_length: int = 256,
    batch_size: int = 64,
    dtype: str = "fp32",
    distributed: bool = False,
    show_progress: bool = False,
    **index_options,
) -> tuple[SearchResult, dict]:
    """Top-k corpus ids of each query. With `distributed`, each rank encodes its contiguous share of `corpus`
    (every rank must pass the same corpus and queries) and the ranks' top-k lists are merged."""
    rank, world = (process_rank(), world_size()) if distributed else (0, 1)
    passages, timings = encode_share(
        encoder, corpus, rank=rank, world=world, passage_max_length=passage_max_length, batch_size=batch_size,
        dtype=dtype, show_progress=show_progress,
    )  # fmt: skip
    result, search_timings = search_queries(
        encoder, query_texts, passages, k=k, query_max_length=query_max_length, dtype=dtype, world=world,
        **index_options,
    )  # fmt: skip
    return result, timings | search_timings


def evaluate_passages(
    encoder: TextEncoder,
    queries: Mapping[str, str],
    qrels: Qrels,
    passages: RankPassages,
    *,
    corpus_ids: set[str],
    empty_passages: int,
    truncated_passages: int | None = None,
    k: int = 1000,
    query_max_length: int = 64,
    query_batch_size: int = 128,
    dtype: str = "fp32",
    relevance_threshold: int = 1,
    hit_ks: Sequence[int] = DEFAULT_HIT_KS,
    world: int = 1,
    index_options: Mapping[str, object] | None = None,
    report: InputReport | None = None,
) -> dict:
    """The pipeline after the corpus is encoded: judged queries -> search -> merge -> metrics, plus the input report.

    Returns score_run's dict ({"metrics", "per_query", "num_queries", "judged_queries_without_results",
    "relevance_threshold"}) with "input_report", "timings" (encode_queries_s, search_s) and "run" (the merged
    top-k of every judged query). With world > 1 every rank must call it; every rank gets the same result.
    `report`: what the readers already counted (repeated ids), added to.
    """
    judged, report = check_inputs(dict(queries), qrels, corpus_ids, report or InputReport())
    report.empty_passages = empty_passages
    report.truncated_passages = truncated_passages
    qids = sorted(judged)
    report.truncated_queries = count_truncated_queries(encoder, [judged[q] for q in qids], query_max_length)
    result, timings = search_queries(
        encoder, [judged[q] for q in qids], passages, k=k, query_max_length=query_max_length,
        query_batch_size=query_batch_size, dtype=dtype, world=world, **(index_options or {}),
    )  # fmt: skip
    run = result.as_run(qids)
    scored = score_run(run, qrels, relevance_threshold=relevance_threshold, hit_ks=hit_ks)
    return scored | {"input_report": report.as_dict(), "timings": timings, "run": run}


def evaluate_model(
    model: nn.Module | TextEncoder,
    queries: Mapping[str, str],
    corpus: Sequence[Mapping[str, str]],
    qrels: Qrels,
    *,
    k: int = 1000,
    query_max_length: int = 64,
    passage_max_length: int = 256,
    batch_size: int = 64,
    dtype: str = "fp32",
    relevance_threshold: int = 1,
    hit_ks: Sequence[int] = DEFAULT_HIT_KS,
    distributed: bool = False,
    backend: str = "torch",
    show_progress: bool = False,
) -> dict:
    """Encode `corpus` ({"id","title","text"} records) and the judged `queries` ({qid: text}), search, score.

    `model` is a lead_dist dual encoder (DDP / DeepSpeed / torch.compile wrappers are unwrapped) or a TextEncoder.
    The model is put in eval mode for the call and its training mode restored afterwards.
    Returns {"metrics": {ndcg@10, mrr@10, recall@100, recall@1000, map@1000, hit@K...}, "per_query": {...},
    "num_queries", "input_report": counts of bad input, "timings": seconds and passages/s, "fingerprint"}. With
    `distributed=True` every rank must call it (it gathers); every rank gets the same result.
    """
    inner = model if isinstance(model, TextEncoder) else unwrap(model)
    was_training = inner.model.training if isinstance(inner, TextEncoder) else inner.training
    encoder = as_text_encoder(inner)  # puts the model in eval mode
    encoder.model.eval()
    rank, world = (process_rank(), world_size()) if distributed else (0, 1)
    try:
        passages, timings = encode_share(
            encoder, corpus, rank=rank, world=world, passage_max_length=passage_max_length, batch_size=batch_size,
            dtype=dtype, show_progress=show_progress,
        )  # fmt: skip
        scored = evaluate_passages(
            encoder, queries, qrels, passages, corpus_ids={r["id"] for r in corpus},
            empty_passages=sum(1 for r in corpus if not (r["title"].strip() or r["text"].strip())),
            truncated_passages=count_truncated_passages(encoder, list(corpus), passage_max_length), k=k,
            query_max_length=query_max_length, dtype=dtype, relevance_threshold=relevance_threshold, hit_ks=hit_ks,
            world=world, index_options={"backend": backend},
        )  # fmt: skip
    finally:
        encoder.model.train(was_training)
    del scored["run"]
    scored["timings"] = timings | scored["timings"]
    scored["fingerprint"] = encoder.fingerprint
    return scored
