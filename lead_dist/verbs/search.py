"""`lead-dist search`: search an embeddings folder with a model's query vectors; write a TREC run.

    lead-dist search --model DIR --index runs/sf-emb --queries ../shared/data/scifact --qrels qrels/test.tsv \
        --out runs/sf-test.trec
Each rank searches the shards it encoded; the per-rank top-k lists are merged (max inner product) on every rank,
and rank 0 writes the run.
"""

from __future__ import annotations

import argparse
import time

from lead_dist.data.readers.qrels import read_qrels
from lead_dist.distributed import init_from_env
from lead_dist.errors import UsageError
from lead_dist.guard import check_apart
from lead_dist.models.folder import check_model_folder
from lead_dist.retrieval.encode import encode_queries
from lead_dist.retrieval.runfile import write_run
from lead_dist.retrieval.search import check_compatible, search_folder
from lead_dist.retrieval.sources import InputReport, read_queries
from lead_dist.retrieval.store import read_manifest
from lead_dist.retrieval.text_encoder import load_text_encoder
from lead_dist.verbs.common import (
    add_encoder_arguments,
    add_index_arguments,
    check_positive,
    index_options,
    pick_device,
    print_summary,
    resolve_lengths,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser, passages=False)
    add_index_arguments(parser)
    parser.add_argument("--index", required=True, help="embeddings folder written by `lead-dist encode`")
    parser.add_argument("--queries", required=True, help="BEIR folder or queries.jsonl, or an MS MARCO queries tsv")
    parser.add_argument("--qrels", help="only search the queries judged in this qrels file")
    parser.add_argument("--out", required=True, help="TREC run file to write")
    parser.add_argument("--tag", default="lead_dist", help="run tag (last column)")


def run(args: argparse.Namespace) -> int:
    check_positive(args.top_k, "--top-k")
    check_model_folder("--model", args.model)
    check_apart(
        {"--out": args.out},
        {"--model": args.model, "--index": args.index, "--queries": args.queries, "--qrels": args.qrels},
    )
    manifest = read_manifest(args.index)  # inputs first: a wrong folder or file fails before the model loads
    report = InputReport()  # repeated ids keep their first occurrence and are counted
    queries = read_queries(args.queries, report.counter("queries"))
    if args.qrels:
        judged = read_qrels(args.qrels, report.counter("judgements"))
        queries = {qid: text for qid, text in queries.items() if qid in judged}
        if not queries:
            raise UsageError(f"--qrels {args.qrels}: judges none of the queries of --queries {args.queries}")
    rank, world = init_from_env()
    device = pick_device(args.device)
    encoder = load_text_encoder(args.model, device)
    resolve_lengths(args, encoder.max_seq_length)
    check_compatible(manifest, encoder, args.index)  # before encoding a single query
    qids = list(queries)
    started = time.perf_counter()
    vectors = encode_queries(
        encoder, [queries[q] for q in qids], max_length=args.query_max_length, batch_size=args.batch_size,
        dtype=args.dtype,
    )  # fmt: skip
    result = search_folder(args.index, vectors, args.top_k, rank=rank, world=world, **index_options(args, device))
    if rank == 0:
        write_run(result.as_run(qids), args.out, tag=args.tag)
        summary = {
            "queries": len(qids),
            "top_k": args.top_k,
            "world_size": world,
            "seconds": time.perf_counter() - started,
            "duplicate_queries": report.duplicate_queries,
            "duplicate_judgements": report.duplicate_judgements,
        }
        print_summary(summary)
    return 0
