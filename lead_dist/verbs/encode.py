"""`lead-dist encode`: encode a corpus into a resumable embeddings folder, each rank its contiguous share.

lead-dist encode --model DIR --corpus ../shared/data/scifact --out runs/sf-emb
torchrun --nproc_per_node 8 -m lead_dist.cli encode --model DIR --corpus collection.tsv --out emb --dtype bf16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lead_dist.distributed import init_from_env
from lead_dist.guard import check_apart
from lead_dist.models.folder import check_model_folder
from lead_dist.retrieval.sources import corpus_census, corpus_file
from lead_dist.retrieval.text_encoder import load_text_encoder
from lead_dist.verbs.common import (
    add_encoder_arguments,
    check_embeddings_folder,
    check_positive,
    encode_locked,
    pick_device,
    print_summary,
    resolve_lengths,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser, queries=False)
    parser.add_argument("--corpus", required=True, help="BEIR folder or corpus.jsonl, or MS MARCO collection.tsv")
    parser.add_argument("--out", required=True, help="embeddings folder (created; rerun with it to resume)")
    parser.add_argument("--shard-size", type=int, help="passages per shard (default: corpus / ranks, at most 100k)")
    parser.add_argument("--overwrite", action="store_true", help="delete what --out holds and encode again")


def run(args: argparse.Namespace) -> int:
    check_positive(args.batch_size, "--batch-size")
    rank, world = init_from_env()
    # inputs and the output first: a missing, undecodable or empty corpus, or an --out that is not an embeddings
    # folder, is named before the model loads
    corpus_file(Path(args.corpus))
    check_apart({"--out": args.out}, {"--corpus": args.corpus, "--model": args.model})
    check_embeddings_folder(args.out, "encode", overwrite=args.overwrite)
    repeats = corpus_census(args.corpus)[1]  # repeated ids keep their first record (lead_dist.retrieval.sources)
    check_model_folder("--model", args.model)
    encoder = load_text_encoder(args.model, pick_device(args.device))
    resolve_lengths(args, encoder.max_seq_length)
    summary = encode_locked(encoder, args.corpus, args.out, args, rank=rank, world=world, verb="encode")
    summary["world_size"] = world
    summary |= {"duplicate_passages": len(repeats), "duplicate_passage_examples": repeats[:5]}
    print_summary(summary)
    return 0
