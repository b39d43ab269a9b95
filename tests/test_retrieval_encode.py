"""Encoding: length-sorted dynamic padding changes nothing but speed; on-disk shards resume; models are told apart."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lead_dist.retrieval.encode import encode_passages, encode_queries
from lead_dist.retrieval.search import check_compatible
from lead_dist.retrieval.store import encode_to_folder, iter_shards, read_manifest
from lead_dist.retrieval.text_encoder import LeadTextEncoder, load_text_encoder

WORDS = "cell protein gene virus dose trial brain mouse risk blood heart lung tumor drug rate".split()


def _records(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        text = " ".join(rng.choices(WORDS, k=rng.randint(1, 60)))
        records.append({"id": f"d{i}", "title": " ".join(rng.choices(WORDS, k=rng.randint(0, 5))), "text": text})
    records[3]["title"], records[3]["text"] = "", ""  # an empty passage must still get a vector
    return records


def _one_at_a_time(encoder, records, max_length):
    """Reference: each passage alone, no padding at all."""
    rows = []
    with torch.inference_mode():
        for r in records:
            rows.append(encoder.embed(encoder.tokenize_passages([r["title"]], [r["text"]], max_length))[0].numpy())
    return np.stack(rows)


def test_sorted_dynamic_padding_equals_unpadded_hf(tiny_bert_dir):
    encoder = load_text_encoder(tiny_bert_dir, "cpu")
    assert (encoder.pooling, encoder.normalize) == ("mean", False)  # a bare transformers folder
    records = _records(45)
    batched = encode_passages(encoder, records, max_length=48, batch_size=8)
    np.testing.assert_allclose(batched, _one_at_a_time(encoder, records, 48), atol=2e-5)


def test_sorted_dynamic_padding_equals_unpadded_lead_model(tiny_bert_dir):
    from lead_dist.models import load_model

    model = load_model(tiny_bert_dir, kind="de", pooling="mean", similarity="cos")
    encoder = LeadTextEncoder(model)
    records = _records(30, seed=1)
    batched = encode_passages(encoder, records, max_length=40, batch_size=7)
    np.testing.assert_allclose(batched, _one_at_a_time(encoder, records, 40), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)  # cos model: unit vectors
    queries = ["gene risk", "brain tumor drug trial dose", "cell"]
    got = encode_queries(encoder, queries, max_length=16, batch_size=2)
    with torch.inference_mode():
        expected = model(**model.tokenize_queries(queries, 16)).final.numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_colbert_and_cross_encoder_refused(tiny_bert_dir):
    from lead_dist.models import load_model

    with pytest.raises(ValueError, match="single-vector dual encoders only"):
        LeadTextEncoder(load_model(tiny_bert_dir, kind="cb"))


def test_reduced_precision_is_close(tiny_bert_dir):
    encoder = load_text_encoder(tiny_bert_dir, "cpu")
    records = _records(20, seed=2)
    full = encode_passages(encoder, records, max_length=48)
    half = encode_passages(encoder, records, max_length=48, dtype="bf16")
    cosine = (full * half).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.99
    assert not np.array_equal(full, half)  # autocast really ran in bf16
    with pytest.raises(ValueError, match="dtype"):
        encode_passages(encoder, records, dtype="int8")


def _write_corpus(path, records):
    with open(path, "w") as handle:
        for r in records:
            handle.write(json.dumps({"_id": r["id"], "title": r["title"], "text": r["text"]}) + "\n")


def test_folder_shards_resume_and_match_in_memory(tiny_bert_dir, tmp_path):
    encoder = load_text_encoder(tiny_bert_dir, "cpu")
    records = _records(50, seed=3)
    _write_corpus(tmp_path / "corpus.jsonl", records)
    out = tmp_path / "emb"
    first = encode_to_folder(encoder, tmp_path / "corpus.jsonl", out, shard_size=16, batch_size=8,
                             max_length=48, show_progress=False)  # fmt: skip
    manifest = read_manifest(out)
    assert (manifest["num_shards"], manifest["num_passages"], first["encoded"]) == (4, 50, 50)
    vectors = np.concatenate([v for v, _ids in iter_shards(out)])
    ids = [i for _v, shard_ids in iter_shards(out) for i in shard_ids]
    assert ids == [r["id"] for r in records]
    np.testing.assert_allclose(vectors, encode_passages(encoder, records, max_length=48), atol=2e-5)
    assert json.loads((out / "shard-00000.done.json").read_text())["empty_passages"] == 1

    # a crash after shard 2 was written but before it was marked done: only shard 2 is redone
    (out / "shard-00002.done.json").unlink()
    (out / "shard-00002.npy").write_bytes(b"half a file")
    with pytest.raises(RuntimeError, match=r"shards \[2\] missing"):
        list(iter_shards(out))
    again = encode_to_folder(encoder, tmp_path / "corpus.jsonl", out, batch_size=8, max_length=48,
                             show_progress=False)  # fmt: skip
    assert (again["skipped"], again["encoded"]) == (3, 16)
    np.testing.assert_allclose(np.concatenate([v for v, _ in iter_shards(out)]), vectors, atol=1e-6)
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind

    # the same folder with other settings or another model is refused, naming what differs
    with pytest.raises(ValueError, match="shard_size is 16"):
        encode_to_folder(encoder, tmp_path / "corpus.jsonl", out, max_length=48, shard_size=10, show_progress=False)
    with pytest.raises(ValueError, match="settings.max_length"):
        encode_to_folder(encoder, tmp_path / "corpus.jsonl", out, max_length=32, show_progress=False)
    torch.manual_seed(0)
    other = load_text_encoder(tiny_bert_dir, "cpu")
    with torch.no_grad():
        other.model.embeddings.word_embeddings.weight.add_(0.01)
    other.fingerprint = type(other)(other.model, other.tokenizer, "mean", False).fingerprint
    assert other.fingerprint != encoder.fingerprint
    with pytest.raises(ValueError, match="another model"):
        encode_to_folder(other, tmp_path / "corpus.jsonl", out, max_length=48, show_progress=False)
    with pytest.raises(ValueError, match="built by another model"):
        check_compatible(manifest, other, out)
    wide = dict(manifest, dim=manifest["dim"] + 1)
    with pytest.raises(ValueError, match="dimension mismatch"):
        check_compatible(wide, encoder, out)


def test_minilm_folder_matches_sentence_transformers(minilm_dir):
    from sentence_transformers import SentenceTransformer

    encoder = load_text_encoder(minilm_dir, "cpu")
    assert (encoder.pooling, encoder.normalize, encoder.dim) == ("mean", True, 384)
    records = _records(12, seed=4)
    ours = encode_passages(encoder, records, max_length=256, batch_size=5)
    reference = SentenceTransformer(minilm_dir, device="cpu").encode(
        [f"{r['title']} {r['text']}".strip() for r in records], batch_size=4
    )
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_prepared_corpus_shards_encode_like_the_jsonl(tiny_bert_dir, tmp_path):
    from lead_dist.cli import main as cli_main

    records = _records(25, seed=5)
    records[3]["text"] = "now not empty"  # prepare may drop empty passages; keep the two sources identical
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    _write_corpus(data / "corpus.jsonl", records)
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "gene risk"}) + "\n")
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\n")
    prepared = tmp_path / "prepared"
    assert cli_main(["prepare", "--format", "beir", "--input", str(data), "--out", str(prepared),
                     "--corpus-shard-size", "10", "--keep-without-negatives"]) == 0  # fmt: skip
    encoder = load_text_encoder(tiny_bert_dir, "cpu")
    for source, out in ((data, tmp_path / "a"), (prepared, tmp_path / "b")):
        encode_to_folder(encoder, source, out, max_length=48, show_progress=False)
    ids_a = [i for _v, ids in iter_shards(tmp_path / "a") for i in ids]
    ids_b = [i for _v, ids in iter_shards(tmp_path / "b") for i in ids]
    assert ids_a == ids_b == [r["id"] for r in records]
    np.testing.assert_allclose(
        np.concatenate([v for v, _ in iter_shards(tmp_path / "b")]),
        np.concatenate([v for v, _ in iter_shards(tmp_path / "a")]),
        atol=1e-6,
    )
