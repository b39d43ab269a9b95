"""An exported DE is the same model in sentence-transformers, titled passages included (issue 15, s2 item 6).

A student cut from all-MiniLM-L6-v2 is saved as the trainer exports it; `lead-dist encode` encodes a titled corpus
with it, and `SentenceTransformer(folder).encode("title text")` must give the same vectors. Both run the same
float32 kernels on the same token ids, so the vectors agree to float32 rounding; cosine >= 0.9999 leaves room for
a different batch padding only (padding is masked, so any difference is summation-order rounding, ~1e-7).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lead_dist.cli import main as cli_main

PASSAGES = [
    ("Vitamin D and bone density", "A randomised trial of vitamin D supplements in older adults found no change."),
    ("", "Passages without a title read the text alone."),
    ("Gene expression in tumours", "Expression of the gene was higher in tumour cells than in the adjacent tissue."),
    ("Short", "x"),
]


@pytest.mark.parametrize(("pooling", "similarity"), [("mean", "cos"), ("cls", "dot")])
def test_titled_passages_encode_alike_here_and_in_sentence_transformers(minilm_dir, tmp_path, pooling, similarity):
    from sentence_transformers import SentenceTransformer

    from lead_dist.models import load_model, student_from_teacher

    teacher = load_model(minilm_dir, kind="de")
    student = student_from_teacher(teacher, 2, kind="de", pooling=pooling, similarity=similarity)
    export = tmp_path / "export"
    student.save(export)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": t, "text": x}) + "\n" for i, (t, x) in enumerate(PASSAGES))
    )
    emb = tmp_path / "emb"
    assert cli_main(["encode", "--model", str(export), "--corpus", str(corpus), "--out", str(emb), "--quiet"]) == 0
    ours = np.load(emb / "shard-00000.npy")

    served = SentenceTransformer(str(export), device="cpu")
    theirs = served.encode([f"{t} {x}".strip() for t, x in PASSAGES], convert_to_numpy=True, batch_size=2)
    cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cosine.min() >= 0.9999, cosine
    if similarity == "cos":  # sentence-transformers normalises too: the vectors themselves agree
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
