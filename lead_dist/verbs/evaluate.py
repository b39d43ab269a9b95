"""`lead-dist evaluate`: encode the corpus, search the judged queries, score with pytrec_eval, write JSON.

    lead-dist evaluate --model DIR --data ../shared/data/scifact --split test --out results.json
    torchrun --nproc_per_node 8 -m lead_dist.cli evaluate --model DIR --data msmarco-beir --split dev --out r.json

Encoding goes through the resumable embeddings folder; everything after it (input report, query encoding, search,
merge, metrics) is `lead_dist.retrieval.evaluate.evaluate_passages`, the pipeline the trainer's dev evaluation uses.
The corpus embeddings go to --embeddings (default: next to --out, `<out stem>.embeddings/`), so an interrupted
evaluation resumes from its finished shards and the same folder serves `lead-dist search` and `mine` later.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lead_dist.atomic import atomic_write_text
from lead_dist.distributed import init_from_env
from lead_dist.guard import check_apart
from lead_dist.models.folder import check_model_folder
from lead_dist.retrieval.evaluate import evaluate_passages
from lead_dist.retrieval.metrics import DEFAULT_HIT_KS
from lead_dist.retrieval.runfile import write_run
from lead_dist.retrieval.search import check_compatible
from lead_dist.retrieval.sources import BeirSplit, InputReport, corpus_census, load_beir_split
from lead_dist.retrieval.store import (
    empty_passages,
    passage_ids,
    rank_shards,
    read_manifest,
    truncated_passages,
)
from lead_dist.retrieval.text_encoder import load_text_encoder
from lead_dist.verbs.common import (
    add_encoder_arguments,
    add_index_arguments,
    check_embeddings_folder,
    check_positive,
    encode_locked,
    index_options,
    pick_device,
    resolve_lengths,
)
from lead_dist.verbs.report import print_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser)
    add_index_arguments(parser)
    parser.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test", help="qrels split (default test)")
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument("--embeddings", help="corpus embeddings folder (default <out stem>.embeddings next to --out)")
    parser.add_argument("--shard-size", type=int, help="passages per embeddings shard (default corpus / ranks)")
    parser.add_argument("--overwrite", action="store_true", help="delete the embeddings folder's content, encode again")
    parser.add_argument("--run-out", help="also write the TREC run here")
    parser.add_argument("--relevance-threshold", type=int, default=1, help="grade counted relevant (TREC DL: 2)")
    parser.add_argument("--hit-k", type=int, nargs="+", default=list(DEFAULT_HIT_KS), help="hit@K cut-offs")


def _counted_repeats(split: BeirSplit) -> InputReport:
    """The split's repeated query ids and judgements, and the corpus's repeated ids (kept first: the embeddings
    hold the first record of each id)."""
    report, count = split.report, split.report.counter("passages")
    for item in corpus_census(split.corpus_path)[1]:
        count(item)
    return report


def run(args: argparse.Namespace) -> int:
    check_positive(args.top_k, "--top-k")
    check_positive(args.batch_size, "--batch-size")
    rank, world = init_from_env()
    device = pick_device(args.device)
    split = load_beir_split(args.data, args.split)  # inputs first: a wrong path fails before the model loads
    out = Path(args.out)
    embeddings = Path(args.embeddings) if args.embeddings else out.with_name(out.stem + ".embeddings")
    check_apart(
        {"--out": out, "--run-out": args.run_out, "--embeddings": embeddings},
        {"--data": args.data, "--model": args.model},
    )
    check_embeddings_folder(embeddings, "evaluate", overwrite=args.overwrite)
    repeats = _counted_repeats(split)  # reads the corpus once: undecodable text is named before the model loads
    check_model_folder("--model", args.model)
    encoder = load_text_encoder(args.model, device)
    resolve_lengths(args, encoder.max_seq_length)

    started = time.perf_counter()
    encoded = encode_locked(encoder, split.corpus_path, embeddings, args, rank=rank, world=world, verb="evaluate")
    encode_s = time.perf_counter() - started
    manifest = read_manifest(embeddings)
    check_compatible(manifest, encoder, embeddings)

    scored = evaluate_passages(
        encoder, split.queries, split.qrels, rank_shards(embeddings, rank, world),
        corpus_ids=passage_ids(embeddings), empty_passages=empty_passages(embeddings),
        truncated_passages=truncated_passages(embeddings), k=args.top_k,
        query_max_length=args.query_max_length, query_batch_size=args.batch_size, dtype=args.dtype,
        relevance_threshold=args.relevance_threshold, hit_ks=args.hit_k, world=world,
        index_options=index_options(args, device), report=repeats,
    )  # fmt: skip
    if rank != 0:
        return 0
    if args.run_out:
        write_run(scored["run"], args.run_out)
    results = {
        "metrics": scored["metrics"],
        "num_queries": scored["num_queries"],
        "judged_queries_without_results": scored["judged_queries_without_results"],
        "relevance_threshold": args.relevance_threshold,
        "input_report": scored["input_report"],
        "settings": {
            "model": str(args.model), "fingerprint": encoder.fingerprint, "data": str(args.data),
            "split": args.split, "top_k": args.top_k, "query_max_length": args.query_max_length,
            "passage_max_length": args.passage_max_length, "dtype": args.dtype, "backend": args.backend,
            "factory": args.factory, "world_size": world, "num_passages": manifest["num_passages"],
        },
        "timings": {
            "encode_s_rank0": encode_s, "shards_skipped_rank0": encoded["skipped"],
            "passages_per_s_rank0": encoded["encoded"] / encoded["seconds"] if encoded["seconds"] else None,
            "query_encode_and_search_s": scored["timings"]["encode_queries_s"] + scored["timings"]["search_s"],
        },
        "per_query": scored["per_query"],
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=1))
    print_summary({"value": results["metrics"]}, results["input_report"], str(out), results["num_queries"])
    return 0
