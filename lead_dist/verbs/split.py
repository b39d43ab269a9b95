"""`lead-dist split`: carve a dev split out of a BEIR training split (queries never trained on, for every model
selection and stopping decision), written as a new BEIR folder.

    lead-dist split --data ../shared/data/scifact --split train --dev-fraction 0.1 --seed 0 --out runs/scifact-split
    lead-dist split --data ../shared/data/scifact --dev-queries configs/scifact/dev_queries.txt --out runs/sf-split \\
        --dev-corpus-size 1000

Then `lead-dist prepare --format beir --input runs/sf-split --split train` trains on the other queries only,
`lead-dist evaluate --data runs/sf-split --split dev` scores the dev split, and a recipe's `data.dev: runs/sf-split`
(or `runs/sf-split/dev_corpus` with --dev-corpus-size) evaluates on it during training. The dev list used is
written to <out>/dev_queries.txt; pass it back with --dev-queries to reproduce the split exactly.
"""

from __future__ import annotations

import argparse

from lead_dist.data.dev_split import (
    LIST_NAME,
    carve_dev_queries,
    read_query_list,
    write_dev_corpus,
    write_split_folder,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/), or a BEIR zip: file or URL"
    )
    parser.add_argument("--sha256", help="the sha256 a BEIR zip given as --data must have (checked; cache reused)")
    parser.add_argument("--split", default="train", help="the split to cut the dev queries from (default train)")
    parser.add_argument("--out", required=True, help="new BEIR folder to write (must not exist or be empty)")
    parser.add_argument("--dev-queries", help="file of dev query ids, one a line ('#' comments); else carve them")
    parser.add_argument("--dev-fraction", type=float, default=0.1, help="share of judged queries to carve (0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the carving hash and of the corpus sample")
    parser.add_argument("--dev-name", default="dev", help="name of the new qrels split (default dev)")
    parser.add_argument(
        "--dev-corpus-size", type=int, default=0,
        help="also write <out>/dev_corpus: the dev split over this many passages (its judged ones + a fixed sample)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from lead_dist.data.beir_zip import beir_from_zip, is_beir_zip
    from lead_dist.data.readers import beir
    from lead_dist.guard import check_apart

    data = args.data
    if is_beir_zip(args.data):
        data = beir_from_zip(args.data, args.sha256)  # unpacked once into the cache; the split links to it there
    elif args.sha256:
        raise ValueError("--sha256 checks a BEIR zip given as --data (a .zip file or an http(s) URL)")
    check_apart(
        {"--out": args.out}, {"--data": args.data, "--data (unpacked)": data, "--dev-queries": args.dev_queries}
    )
    if args.dev_queries:
        dev = read_query_list(args.dev_queries)
    else:
        _corpus, _queries, qrels = beir.beir_paths(data, args.split)
        dev = carve_dev_queries({j.qid for j in beir.read_qrels(qrels)}, args.dev_fraction, args.seed)
    summary = write_split_folder(data, args.split, dev, args.out, dev_name=args.dev_name)
    dev_corpus = None
    if args.dev_corpus_size:
        dev_corpus = write_dev_corpus(
            args.out, args.dev_corpus_size, args.seed, f"{args.out}/dev_corpus", dev_name=args.dev_name
        )
    corpus_note = f"; dev corpus of {dev_corpus['size']} passages in {args.out}/dev_corpus" if dev_corpus else ""
    print(f"{args.out}: {summary.train_queries} {args.split} + {summary.dev_queries} {args.dev_name} queries "
          f"(list: {args.out}/{LIST_NAME}){corpus_note}")  # fmt: skip
    return 0
