"""Default lengths come from the model, and truncation is counted (issue 15, section 2 item 5), through the CLI.

all-MiniLM-L6-v2 encodes up to 256 tokens in sentence-transformers; `lead-dist evaluate` used to cut queries at 64.
Queries of 100 single-token words (102 tokens with [CLS] and [SEP]) are whole with the default and counted as
truncated with --query-max-length 64.
"""

from __future__ import annotations

import json
from pathlib import Path

from lead_dist.cli import main as cli_main

WORDS = ["cell", "protein", "gene", "virus", "brain", "blood", "heart", "lung", "drug", "risk"]


def _beir(folder: Path, query_words: list[int], passage_words: list[int]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    queries = [
        {"_id": f"q{i}", "text": " ".join(WORDS[(i + j) % 10] for j in range(n))} for i, n in enumerate(query_words)
    ]
    corpus = [
        {"_id": f"d{i}", "title": "", "text": " ".join(WORDS[(i * 3 + j) % 10] for j in range(n))}
        for i, n in enumerate(passage_words)
    ]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    qrels = "".join(f"q{i}\td{i}\t1\n" for i in range(len(queries)))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


def test_default_lengths_are_the_models_and_truncations_are_counted(minilm_dir, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    assert [len(tokenizer(w)["input_ids"]) for w in WORDS] == [3] * 10  # each word is one token
    query_words = [100, 100, 100, 20, 5]  # three queries over 64 tokens, none over 256
    passage_words = [30, 10, 40, 14, 5]  # over 16 tokens with [CLS] and [SEP]: 30, 40 (and not 14 + 2 = 16)
    data = _beir(tmp_path / "beir", query_words, passage_words)
    args = ["evaluate", "--model", minilm_dir, "--data", str(data), "--top-k", "5", "--quiet"]

    assert cli_main([*args, "--out", str(tmp_path / "default.json")]) == 0
    default = json.loads((tmp_path / "default.json").read_text())
    st_length = SentenceTransformer(minilm_dir, device="cpu").max_seq_length
    assert st_length == 256
    assert default["settings"]["query_max_length"] == default["settings"]["passage_max_length"] == st_length
    assert default["input_report"]["truncated_queries"] == 0
    assert default["input_report"]["truncated_passages"] == 0

    short = ["--query-max-length", "64", "--passage-max-length", "16", "--out", str(tmp_path / "short.json")]
    assert cli_main([*args, *short]) == 0
    report = json.loads((tmp_path / "short.json").read_text())["input_report"]
    assert report["truncated_queries"] == 3
    assert report["truncated_passages"] == 2
