"""Full-corpus evaluation: encode the corpus and the queries, exact top-k search, score with pytrec_eval.

`evaluate_model` is the hook the trainer calls on a dev subset every N steps; `lead-dist evaluate` uses the same
function on a whole BEIR split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from torch import nn

from lead_dist.data.readers.qrels import Qrels
from lead_dist.distributed import contiguous_share, unwrap, world_size
from lead_dist.distributed import rank as process_rank
from lead_dist.retrieval.encode import Throughput, encode_passages, encode_queries
from lead_dist.retrieval.index_base import SearchResult
from lead_dist.retrieval.metrics import DEFAULT_HIT_KS, score_run
from lead_dist.retrieval.search import gather_and_merge, search_local
from lead_dist.retrieval.sources import InputReport, check_inputs
from lead_dist.retrieval.text_encoder import TextEncoder, as_text_encoder


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
    share = contiguous_share(len(corpus), rank, world)
    records = [corpus[i] for i in share]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    meter = Throughput(len(records), f"encode rank {rank}", enabled=show_progress)
    passages = encode_passages(
        encoder, records, max_length=passage_max_length, batch_size=batch_size, dtype=dtype, progress=meter
    )
    timings["encode_passages_s"] = time.perf_counter() - started
    timings["passages_per_s"] = len(records) / max(timings["encode_passages_s"], 1e-9)
    started = time.perf_counter()
    queries = encode_queries(encoder, list(query_texts), max_length=query_max_length, dtype=dtype)
    timings["encode_queries_s"] = time.perf_counter() - started
    started = time.perf_counter()
    local = search_local([passages], [[r["id"] for r in records]], queries, k, **index_options)
    result = gather_and_merge(local, k) if world > 1 else local
    timings["search_s"] = time.perf_counter() - started
    return result, timings


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
    "num_queries", "input_report": counts of bad input, "timings": seconds and passages/s}. With
    `distributed=True` every rank must call it (it gathers); every rank gets the same result.
    """
    inner = model if isinstance(model, TextEncoder) else unwrap(model)
    was_training = inner.model.training if isinstance(inner, TextEncoder) else inner.training
    encoder = as_text_encoder(inner)  # puts the model in eval mode
    encoder.model.eval()
    try:
        judged, report = check_inputs(dict(queries), qrels, {r["id"] for r in corpus}, InputReport())
        report.empty_passages = sum(1 for r in corpus if not (r["title"].strip() or r["text"].strip()))
        qids = sorted(judged)
        result, timings = retrieve(
            encoder,
            [judged[q] for q in qids],
            corpus,
            k=k,
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            batch_size=batch_size,
            dtype=dtype,
            distributed=distributed,
            show_progress=show_progress,
            backend=backend,
        )
    finally:
        encoder.model.train(was_training)
    scored = score_run(result.as_run(qids), qrels, relevance_threshold=relevance_threshold, hit_ks=hit_ks)
    scored["input_report"] = report.as_dict()
    scored["timings"] = timings
    scored["fingerprint"] = encoder.fingerprint
    return scored
