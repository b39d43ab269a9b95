"""Flags and set-up shared by the retrieval verbs (encode, search, evaluate, rerank)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from lead_dist.folder_claim import lock_folder, on_main
from lead_dist.guard import check_deletable, check_ours, folder_entries, mark_folder, marker_kind
from lead_dist.lockfile import FolderLock
from lead_dist.retrieval.encode import DTYPES
from lead_dist.retrieval.indexes import BACKENDS
from lead_dist.retrieval.store import encode_to_folder
from lead_dist.retrieval.text_encoder import TextEncoder


def add_encoder_arguments(parser: argparse.ArgumentParser, *, passages: bool = True, queries: bool = True) -> None:
    parser.add_argument("--model", required=True, help="lead_dist model folder or a (sentence-)transformers folder")
    if passages:
        parser.add_argument(
            "--passage-max-length", type=int, help="tokens per passage (default: the model's max_seq_length)"
        )
    if queries:
        parser.add_argument(
            "--query-max-length", type=int, help="tokens per query (default: the model's max_seq_length)"
        )
    parser.add_argument("--batch-size", type=int, default=64, help="passages per forward pass (default 64)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype (default fp32)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: this rank's GPU if any, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top-k", type=int, default=1000, help="documents retrieved per query (default 1000)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="index backend (default torch exact)")
    parser.add_argument("--factory", default="Flat", help="faiss index_factory string, e.g. Flat, IVF1024,Flat, HNSW32")
    parser.add_argument("--search-params", help="faiss search parameters, e.g. nprobe=64 or efSearch=128")
    parser.add_argument(
        "--fp16-index", action="store_true", help="store the index in fp16 (less memory, may cost recall)"
    )


def index_options(args: argparse.Namespace, device: str) -> dict:
    return {
        "backend": args.backend,
        "factory": args.factory,
        "device": device,
        "fp16": args.fp16_index,
        "search_params": args.search_params,
    }


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def check_positive(value: int, flag: str) -> None:
    if value < 1:
        raise ValueError(f"{flag} must be >= 1, got {value}")


def encode_locked(
    encoder: TextEncoder,
    corpus: str | Path,
    folder: str | Path,
    args: argparse.Namespace,
    *,
    rank: int,
    world: int,
    verb: str,
) -> dict:
    """`encode_to_folder` with the folder's lock held by rank 0 (`lead_dist.folder_claim`), from the verb's flags.
    The folder must be new, empty or an embeddings folder (`claim_embeddings`)."""
    lock = on_main(rank == 0, lambda: claim_embeddings(folder, verb, overwrite=args.overwrite))
    try:
        return encode_to_folder(
            encoder, corpus, folder, rank=rank, world=world, max_length=args.passage_max_length,
            batch_size=args.batch_size, dtype=args.dtype, shard_size=args.shard_size, show_progress=not args.quiet,
            overwrite=args.overwrite,
        )  # fmt: skip
    finally:
        if lock is not None:
            lock.release()


def check_embeddings_folder(folder: str | Path, verb: str, *, overwrite: bool) -> bool:
    """Is `folder` one `verb` may encode into (`lead_dist.guard`)? New or empty, marked as embeddings, or written by
    an encode from before markers (a valid embeddings manifest: reused; `--overwrite` of such an unmarked folder is
    refused like any other). Anything else, such as a training run or a prepared folder, is refused (UsageError):
    encoding would mix vectors into it, `--overwrite` would delete it. Returns whether it still needs the marker.
    Read-only: call it before the model loads, and again under the lock (`claim_embeddings`)."""
    from lead_dist.retrieval.store import read_manifest

    flag = "--out" if verb == "encode" else "--embeddings"
    if not folder_entries(folder):
        return True
    if marker_kind(folder) == "embeddings":
        return False
    if overwrite:
        check_deletable(folder, "embeddings", flag=flag)
    try:
        read_manifest(folder)  # an embeddings folder of an older version: reused as it is
    except ValueError:
        check_ours(folder, "embeddings", flag=flag, what=f"{verb} would mix embeddings into it")
    return True


def claim_embeddings(folder: str | Path, verb: str, *, overwrite: bool) -> FolderLock:
    """Lock an embeddings folder, check it again (`check_embeddings_folder`) and mark it."""
    lock = lock_folder(folder, f"lead-dist {verb}")
    try:
        if check_embeddings_folder(folder, verb, overwrite=overwrite):
            mark_folder(folder, "embeddings")
    except BaseException:
        lock.release()
        raise
    return lock


def resolve_lengths(args: argparse.Namespace, model_max_length: int) -> None:
    """Fill the length flags the user left out with the model's own limit (what sentence-transformers uses: a
    shorter default silently truncates long queries); check the given ones."""
    for name in ("query_max_length", "passage_max_length"):
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if value is None:
            setattr(args, name, int(model_max_length))
        else:
            check_positive(value, "--" + name.replace("_", "-"))


def print_summary(summary: dict, *, sort_keys: bool = False) -> None:
    """A verb's one-line JSON summary on stdout (every rank of a launch prints its own), in one write call so that it
    stays whole even when `run` is called from Python, without `lead_dist.cli.whole_lines` (where the CLI makes
    every line of a verb leave in one write)."""
    sys.stdout.write(json.dumps(summary, sort_keys=sort_keys) + "\n")
    sys.stdout.flush()
