"""Decoder embedders in sentence-transformers layout, both ways, against the installed sentence-transformers itself:
- a folder written by sentence-transformers (last-token pooling, Normalize, query and document prompts, a tokenizer
  that appends EOS and pads on the left) loads in `load_model` and in retrieval's encoder, and both encode queries and
  passages as `encode_query` / `encode_document` do;
- a lead_dist decoder DE of each family exports to a folder sentence-transformers encodes the same (the
  `pooling_mode_lasttoken` flag, the prompts, the EOS rule in the tokenizer), and `load_model` reads it back
  identically;
- a tokenizer_config.json's `add_eos_token: true` (which transformers 5 drops) is applied;
- what the parser cannot reproduce is refused by name;
- `lead-dist evaluate` on a tiny decoder folder equals sentence-transformers' encode + exact search + pytrec_eval
  within 0.001 nDCG@10 (the issue's bar).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from decoder_models import DECODER_NAMES, decoder_tokenizer, tiny_decoder
from family_models import PASSAGES, QUERIES, TITLES
from sentence_transformers import SentenceTransformer

from lead_dist.models import load_model, model_from_config
from lead_dist.models.tokenization import join_title
from lead_dist.retrieval.text_encoder import load_text_encoder

QUERY_PROMPT, DOCUMENT_PROMPT = "why is ", "about "
# The same tiny model run by two programs whose forwards differ only in batch shape and padding side (rotary angles
# at other positions, other reduction blockings): the float32 rounding of a 3-block, 32-wide forward, a few 1e-7 on
# unit vectors (tests/test_models_decoders.py bounds it), well inside 1e-5.
VECTOR_ATOL = 1e-5


def saved_backbone(family: str, folder: Path, layers: int = 3, seed: int = 0) -> Path:
    config, tokenizer = tiny_decoder(family, layers)
    torch.manual_seed(seed)
    model_from_config(config, tokenizer, "de").backbone.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def saved_by_sentence_transformers(backbone_dir: Path, folder: Path, *, prompts=None, include_prompt=True) -> Path:
    """A folder written by the installed sentence-transformers (6.x module paths, with 5.x's as a fallback)."""
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer
    transformer = Transformer(str(backbone_dir), max_seq_length=64)
    width = transformer.get_embedding_dimension()
    pooling = Pooling(width, pooling_mode="lasttoken", include_prompt=include_prompt)
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu", prompts=prompts)
    model.save(str(folder))
    return folder


def st_vectors(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    st = SentenceTransformer(str(folder), device="cpu")
    queries = st.encode_query(QUERIES, convert_to_tensor=True)
    passages = st.encode_document(join_title(TITLES, PASSAGES), convert_to_tensor=True)
    return queries, passages


def lead_vectors(model) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        queries = model(**model.tokenize_queries(QUERIES, 64)).final
        passages = model(**model.tokenize_passages(TITLES, PASSAGES, 64)).final
    return queries, passages


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory) -> Path:
    """Qwen3-Embedding's layout: last-token pooling of a tokenizer that appends <|endoftext|> and pads on the left,
    normalised, with a query instruction and a document prompt."""
    root = tmp_path_factory.mktemp("decoder_st")
    backbone = saved_backbone("qwen3", root / "backbone")
    prompts = {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}
    return saved_by_sentence_transformers(backbone, root / "st", prompts=prompts)


def test_folder_written_by_sentence_transformers_loads_as_it_encodes(st_folder: Path) -> None:
    pooling = json.loads((st_folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == "lasttoken"  # what the installed version writes
    theirs = st_vectors(st_folder)

    model = load_model(st_folder, kind="de").eval()
    assert (model.pooling, model.similarity, model.max_seq_length) == ("lasttoken", "cos", 64)
    assert (model.query_prompt, model.passage_prompt) == (QUERY_PROMPT, DOCUMENT_PROMPT)
    assert model.tokenizer.padding_side == "left" and model.text_end == [model.tokenizer.eos_token_id]
    for ours, reference in zip(lead_vectors(model), theirs, strict=True):
        torch.testing.assert_close(ours, reference, atol=VECTOR_ATOL, rtol=0)

    encoder = load_text_encoder(st_folder)  # the plain-folder path of retrieval: the tokenizer itself, left padding
    assert (encoder.pooling, encoder.normalize, encoder.padding_side) == ("lasttoken", True, "left")
    with torch.no_grad():
        queries = encoder.embed(encoder.tokenize_queries(QUERIES, 64))
        passages = encoder.embed(encoder.tokenize_passages(TITLES, PASSAGES, 64))
    for ours, reference in zip((queries, passages), theirs, strict=True):
        torch.testing.assert_close(ours, reference, atol=VECTOR_ATOL, rtol=0)
    # the prompts matter: without them the vectors are far off
    model.query_prompt = ""
    assert F.cosine_similarity(lead_vectors(model)[0], theirs[0]).min() < 0.999


@pytest.mark.parametrize("family", DECODER_NAMES)
def test_exported_decoder_encodes_the_same_in_sentence_transformers(family: str, tmp_path) -> None:
    """Last-token pooling, cosine, prompts and EOS appended (the tokenizer carries it): sentence-transformers' encode_
    query / encode_document of the exported folder equal our vectors, and load_model reads the folder back exactly."""
    config, tokenizer = tiny_decoder(family, 3)
    torch.manual_seed(1)
    options = {"similarity": "cos", "query_prompt": QUERY_PROMPT, "passage_prompt": DOCUMENT_PROMPT,
               "append_eos": True, "max_seq_length": 64}  # fmt: skip
    model = model_from_config(config, tokenizer, "de", **options).eval()
    assert model.pooling == "lasttoken"  # the family default
    model.save(tmp_path / "de")
    pooling = json.loads((tmp_path / "de" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_lasttoken"] is True and pooling["pooling_mode_cls_token"] is False
    st_config = json.loads((tmp_path / "de" / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}
    ours = lead_vectors(model)
    for mine, theirs in zip(ours, st_vectors(tmp_path / "de"), strict=True):
        torch.testing.assert_close(mine, theirs, atol=VECTOR_ATOL, rtol=0)

    reloaded = load_model(tmp_path / "de").eval()
    assert reloaded.options == model.options
    assert reloaded.text_start == model.text_start and reloaded.text_end == [tokenizer.eos_token_id]
    for again, mine in zip(lead_vectors(reloaded), ours, strict=True):
        assert torch.equal(again, mine)


def test_add_eos_token_in_tokenizer_config_is_applied(tmp_path) -> None:
    """e5-mistral's tokenizer_config.json says `add_eos_token: true`; transformers 5 drops the key when a
    tokenizer.json is there, so a Llama tokenizer would encode without EOS. load_model applies it, and the folder it
    saves carries the rule in its tokenizer.json (plain transformers then appends EOS too)."""
    from transformers import AutoTokenizer

    folder = saved_backbone("mistral", tmp_path / "e5-like")
    config_path = folder / "tokenizer_config.json"
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | {"add_eos_token": True}))
    eos = decoder_tokenizer("mistral").eos_token_id
    assert AutoTokenizer.from_pretrained(folder)("sea")["input_ids"][-1] != eos  # what transformers 5 does
    model = load_model(folder, kind="de")
    assert model.text_end == [eos] and model.text_start == [decoder_tokenizer("mistral").bos_token_id]
    model.save(tmp_path / "saved")
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")("sea")["input_ids"][-1] == eos
    encoder = load_text_encoder(folder)
    assert encoder.tokenize_queries(["sea"], 8)["input_ids"][0, -1] == eos


def test_what_the_parser_cannot_reproduce_is_refused_by_name(tmp_path) -> None:
    backbone = saved_backbone("qwen3", tmp_path / "backbone")
    folder = saved_by_sentence_transformers(backbone, tmp_path / "st", prompts={"query": QUERY_PROMPT})
    pooling_path = folder / "1_Pooling" / "config.json"
    pooling = json.loads(pooling_path.read_text())
    # include_prompt false does not change the last token: accepted
    pooling_path.write_text(json.dumps(pooling | {"include_prompt": False}))
    assert load_model(folder, kind="de").query_prompt == QUERY_PROMPT
    # ... but it changes a mean: refused, naming the key and the file
    pooling_path.write_text(json.dumps(pooling | {"include_prompt": False, "pooling_mode": "mean"}))
    for load in (lambda: load_model(folder, kind="de"), lambda: load_text_encoder(folder)):
        with pytest.raises(ValueError, match=r"1_Pooling/config.json: 'include_prompt': false with mean pooling"):
            load()
    pooling_path.write_text(json.dumps(pooling))
    st_path = folder / "config_sentence_transformers.json"
    st_config = json.loads(st_path.read_text())
    st_path.write_text(json.dumps(st_config | {"default_prompt_name": "passage"}))
    with pytest.raises(ValueError, match=r"'default_prompt_name' 'passage' names no prompt"):
        load_model(folder, kind="de")
    # a default prompt that exists: only a plain encode() would use it; retrieval encodes as encode_query does
    st_path.write_text(json.dumps(st_config | {"default_prompt_name": "query"}))
    model = load_model(folder, kind="de")
    assert (model.query_prompt, model.passage_prompt) == (QUERY_PROMPT, "")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_evaluate_equals_sentence_transformers_and_pytrec_eval(tmp_path, tmp_path_factory) -> None:
    """The issue's bar: `lead-dist evaluate` on a decoder folder in sentence-transformers layout (last token, prompts,
    EOS, left padding) and the peer (encode_query / encode_document, exact inner-product search of every passage,
    pytrec_eval) agree within 0.001 nDCG@10, on the tiny BEIR folder of the launch tests (48 queries, 160 passages)."""
    import pytrec_eval
    import test_train_loop_helpers as helpers

    from lead_dist.cli import main

    beir = helpers.shared_beir(tmp_path_factory)
    backbone = saved_backbone("qwen3", tmp_path / "backbone", layers=2, seed=4)
    folder = saved_by_sentence_transformers(backbone, tmp_path / "st", prompts={"query": QUERY_PROMPT,
                                                                                 "document": DOCUMENT_PROMPT})  # fmt: skip
    out = tmp_path / "ours.json"
    args = ["evaluate", "--model", str(folder), "--data", str(beir), "--split", "train", "--out", str(out), "--quiet"]
    assert main(args) == 0
    ours = json.loads(out.read_text())

    corpus = _read_jsonl(beir / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in _read_jsonl(beir / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    for line in (beir / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        qid, docid, score = line.split("\t")
        qrels.setdefault(qid, {})[docid] = int(score)
    st = SentenceTransformer(str(folder), device="cpu")
    qids = sorted(qrels)
    q_vectors = st.encode_query([queries[qid] for qid in qids], convert_to_numpy=True)
    p_vectors = st.encode_document(join_title([d.get("title", "") for d in corpus], [d["text"] for d in corpus]),
                                   convert_to_numpy=True)  # fmt: skip
    scores = q_vectors @ p_vectors.T
    run = {
        qid: {doc["_id"]: float(s) for doc, s in zip(corpus, row, strict=True)}
        for qid, row in zip(qids, scores, strict=True)
    }
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    peer = float(np.mean([values["ndcg_cut_10"] for values in per_query.values()]))
    assert ours["num_queries"] == len(qids) == 48
    assert 0.0 < peer < 1.0  # a random model ranks some positives high and misses others
    assert abs(ours["metrics"]["ndcg@10"] - peer) <= 0.001, (ours["metrics"]["ndcg@10"], peer)


def test_a_bare_decoder_folder_is_read_at_its_last_token(tmp_path) -> None:
    """Without sentence-transformers modules, retrieval reads a decoder folder as its family does (last token, no
    norm; an encoder's bare folder keeps the mean), the same vectors as `load_model(kind="de", similarity="dot")`."""
    folder = saved_backbone("gemma", tmp_path / "bare")
    encoder = load_text_encoder(folder)
    assert (encoder.pooling, encoder.normalize) == ("lasttoken", False)
    model = load_model(folder, kind="de", similarity="dot").eval()
    with torch.no_grad():
        ours = encoder.embed(encoder.tokenize_queries(QUERIES, 64))
        reference = model(**model.tokenize_queries(QUERIES, 64)).final
    torch.testing.assert_close(ours, reference, atol=VECTOR_ATOL * reference.abs().max().item(), rtol=0)
