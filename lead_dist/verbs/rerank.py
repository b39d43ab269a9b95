"""`lead-dist rerank`: re-rank a first-stage run's top documents with any model kind (DE, CB or CE), then score.

    lead-dist rerank --model runs/scifact/warmup_ce/export/model --data ../shared/data/scifact --split test \
        --first-stage runs/sf-de-test.trec --depth 100 --out runs/sf-ce-rerank.json
    torchrun --nproc_per_node 4 -m lead_dist.cli rerank ...        # the judged queries are split across ranks

The first-stage run is any TREC run (e.g. `lead-dist evaluate --run-out` or `lead-dist search` with a DE). The
results JSON has the same `metrics` keys as `lead-dist evaluate`, plus `first_stage_metrics` of the run it started
from: re-ranking the top `--depth` documents cannot change recall@depth (see lead_dist/retrieval/rerank.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lead_dist.atomic import atomic_write_text
from lead_dist.config.schema import KINDS
from lead_dist.data.readers.trec_run import read_run
from lead_dist.distributed import all_gather_objects, contiguous_share, init_from_env
from lead_dist.errors import UsageError
from lead_dist.guard import check_apart
from lead_dist.models.factory import load_model
from lead_dist.models.folder import check_model_folder
from lead_dist.retrieval.encode import Throughput
from lead_dist.retrieval.metrics import DEFAULT_HIT_KS, score_run
from lead_dist.retrieval.rerank import RerankInputs, candidates_from_run, rerank
from lead_dist.retrieval.runfile import write_run
from lead_dist.retrieval.sources import check_inputs, load_beir_split, read_corpus_subset
from lead_dist.retrieval.text_encoder import default_max_length
from lead_dist.verbs.common import add_encoder_arguments, check_positive, pick_device, resolve_lengths
from lead_dist.verbs.report import print_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser)
    parser.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test", help="qrels split (default test)")
    parser.add_argument(
        "--first-stage",
        required=True,
        help="TREC run whose top documents are re-ranked (a name torchrun does not swallow, unlike --run)",
    )
    parser.add_argument("--kind", choices=KINDS, help="model kind (default: the folder's lead_dist.json)")
    parser.add_argument("--depth", type=int, default=100, help="documents re-ranked per query (default 100)")
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument("--run-out", help="also write the re-ranked TREC run here")
    parser.add_argument("--relevance-threshold", type=int, default=1, help="grade counted relevant (TREC DL: 2)")
    parser.add_argument("--hit-k", type=int, nargs="+", default=list(DEFAULT_HIT_KS), help="hit@K cut-offs")


def _default_lengths(args: argparse.Namespace, model) -> None:
    """Lengths left out come from the model (`default_max_length`); a cross-encoder reads query and passage as one
    pair within that limit, so it gets 64 query tokens and the rest for the passage."""
    limit = default_max_length(model.backbone, model.tokenizer, getattr(model, "max_seq_length", None))
    if model.kind == "ce":
        args.query_max_length = args.query_max_length or min(64, limit // 2)
        args.passage_max_length = args.passage_max_length or limit - args.query_max_length
    resolve_lengths(args, limit)


def run(args: argparse.Namespace) -> int:
    for value, flag in ((args.depth, "--depth"), (args.batch_size, "--batch-size")):
        check_positive(value, flag)
    rank, world = init_from_env()
    device = pick_device(args.device)
    split = load_beir_split(args.data, args.split)  # inputs first: a wrong path fails before the model loads
    first_stage = read_run(args.first_stage)
    check_apart(
        {"--out": args.out, "--run-out": args.run_out},
        {"--model": args.model, "--data": args.data, "--first-stage": args.first_stage},
    )
    check_model_folder("--model", args.model)
    try:
        model = load_model(args.model, kind=args.kind)
    except ValueError as error:
        hint = " (pass --kind de|cb|ce)" if args.kind is None and "kind" in str(error) else ""
        raise UsageError(f"{error}{hint}") from None
    if model.fresh_parameters:
        raise UsageError(
            f"{args.model} has freshly initialised parameters ({', '.join(model.fresh_parameters)}):"
            f" it was never trained as a {model.kind} model, so its scores would be noise. Train it first "
            f"(lead-dist train with stage: warmup) and pass the exported folder."
        )
    model.to(device)
    _default_lengths(args, model)

    judged, _ = check_inputs(split.queries, split.qrels, None)  # counted again below, with the corpus ids
    qids = sorted(judged)
    share = [qids[i] for i in contiguous_share(len(qids), rank, world)]
    candidates = candidates_from_run(first_stage, args.depth, share)
    wanted = {docid for docids in candidates.values() for docid in docids}
    report = split.report  # repeated query ids and judgements; repeated corpus ids are counted as it is read
    corpus = read_corpus_subset(split.corpus_path, wanted, report.counter("passages"))
    missing = sorted(wanted - corpus.ids)
    if missing:
        raise UsageError(
            f"{args.first_stage} names {len(missing)} documents that {split.corpus_path} lacks, e.g. "
            f"{missing[:5]}: was the run made on another corpus?"
        )
    _judged, report = check_inputs(split.queries, split.qrels, corpus.ids, report)
    report.empty_passages = corpus.empty_passages
    absent_from_run = [qid for qid in share if not candidates[qid]]  # they count 0 in every metric

    work = sum(len(c) for c in candidates.values()) if model.kind == "ce" else len(corpus.passages)
    meter = Throughput(work, f"rerank rank {rank} ({model.kind})", enabled=not args.quiet)
    local_run, timings = rerank(
        model, RerankInputs(judged, candidates, corpus.passages), query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length, batch_size=args.batch_size, dtype=args.dtype, progress=meter,
    )  # fmt: skip
    gathered = all_gather_objects((local_run, timings, absent_from_run))
    if rank != 0:
        return 0
    reranked = {qid: ranked for part, _t, _w in gathered for qid, ranked in part.items()}
    reranked = {qid: ranked for qid, ranked in reranked.items() if ranked}
    if args.run_out:
        write_run(reranked, args.run_out, tag="lead_dist_rerank")
    scored = score_run(reranked, split.qrels, relevance_threshold=args.relevance_threshold, hit_ks=args.hit_k)
    first = score_run(
        {qid: first_stage.get(qid, []) for qid in qids}, split.qrels, relevance_threshold=args.relevance_threshold,
        hit_ks=args.hit_k,
    )  # fmt: skip
    results = {
        "metrics": scored["metrics"],
        "first_stage_metrics": first["metrics"],
        "num_queries": scored["num_queries"],
        "judged_queries_without_results": scored["judged_queries_without_results"],
        "judged_queries_absent_from_first_stage": sum(len(w) for _r, _t, w in gathered),
        "relevance_threshold": args.relevance_threshold,
        "input_report": report.as_dict(),
        "settings": {
            "model": str(args.model), "kind": model.kind, "data": str(args.data), "split": args.split,
            "first_stage_run": str(args.first_stage), "depth": args.depth, "query_max_length": args.query_max_length,
            "passage_max_length": args.passage_max_length, "dtype": args.dtype, "world_size": world,
        },
        "timings": {
            "rerank_s_per_rank": [t["rerank_s"] for _r, t, _w in gathered],
            "pairs": sum(t["pairs"] for _r, t, _w in gathered),
        },
        "per_query": scored["per_query"],
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=1))
    columns = {"first stage": first["metrics"], "re-ranked": results["metrics"]}
    print_summary(columns, results["input_report"], str(out), results["num_queries"])
    return 0
