"""The verbs with decoder backbones, on tiny random decoders built from config sections with the tiny tokenizers of
tests/decoder_models.py, on the shared tiny BEIR shards:
- `train` with a decoder teacher (DE with a query prompt set by the config key, CE frozen) and a BERT student, and a
  decoder student cut from a decoder teacher's first blocks, whose export encodes the same in sentence-transformers
  and loads back with its prompt;
- `cache-teacher` of a frozen decoder teacher (DE and CE): the cached per-layer outputs equal the live teacher's
  within the storage rounding, and `train` runs from the cache;
- `evaluate` on a lead_dist decoder DE folder and `rerank` with a decoder CE folder;
- a ColBERT over a decoder is refused before any work, with one line naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_train_loop_helpers as helpers
import torch
import torch.nn.functional as F
from decoder_models import decoder_config, decoder_tokenizer
from family_models import PASSAGES, QUERIES, TITLES
from sentence_transformers import SentenceTransformer
from test_models_families_verbs import cache_matches_the_live_teacher_and_trains
from test_train_loop_helpers import fresh_accelerate_state  # noqa: F401 (a fixture, used by name)

from lead_dist.cli import main
from lead_dist.config import config_from_dict
from lead_dist.models import load_model
from lead_dist.models.from_config import build_teacher
from lead_dist.models.tokenization import join_title

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
PROMPT = "find: "
FAMILIES_USED = ("qwen3", "llama", "gemma2")


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("decoder_tokenizers")
    for family in FAMILIES_USED:
        decoder_tokenizer(family).save_pretrained(root / family)
    return {family: str(root / family) for family in FAMILIES_USED}


def section(family: str, layers: int, tokenizers: dict[str, str], kind: str = "de", **extra) -> dict:
    built = {k: v for k, v in decoder_config(family, layers).to_diff_dict().items() if k != "transformers_version"}
    return {"config": built, "tokenizer": tokenizers[family], "kind": kind, "lr": 1e-3, **extra}


def run_config(tmp_path: Path, shards: Path, teacher: dict, student: dict) -> dict:
    raw = helpers.tiny_config(shards, tmp_path / "run", helpers.minilm_tokenizer())
    raw["teacher"] = teacher
    if student:
        raw["student"] = raw["student"] | student
    raw["train"] |= {"max_steps": 3}
    return raw


def test_train_with_a_decoder_teacher_and_its_prompt(tmp_path, tmp_path_factory, tokenizer_dirs) -> None:
    """A Qwen3 DE teacher trained jointly with a BERT student; `teacher.query_prompt` reaches the teacher's queries
    (and only the teacher's)."""
    teacher = section("qwen3", 3, tokenizer_dirs, similarity="cos", query_prompt=PROMPT)
    raw = run_config(tmp_path, helpers.shared_shards(tmp_path_factory), teacher, {})
    config = config_from_dict(raw)
    built = build_teacher(config)
    assert (built.pooling, built.query_prompt) == ("lasttoken", PROMPT)
    assert built.tokenize_queries(["sea"], 16)["input_ids"][0].tolist()[:3] == built.tokenizer(PROMPT)["input_ids"][:3]
    path = helpers.write_config(tmp_path / "run.yaml", raw)
    assert main(["train", str(path)]) == 0
    losses = helpers.losses(tmp_path / "run")
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    exported = tmp_path / "run" / "export" / "student"
    assert json.loads((exported / "config.json").read_text())["model_type"] == "bert"


def test_train_a_decoder_student_cut_from_a_decoder_teacher_round_trips(
    tmp_path, tmp_path_factory, tokenizer_dirs
) -> None:
    """A Gemma2 DE teacher (frozen) and its first 2 blocks as the student, with a passage prompt: the exported
    student is a gemma2 folder of 2 blocks that sentence-transformers encodes as lead_dist does (last token,
    prompts), and that `load_model` reads back with its options."""
    teacher = section("gemma2", 3, tokenizer_dirs, trained=False)
    student = {"from_teacher_layers": 2, "kind": "de", "lr": 1e-3, "passage_prompt": "text: ", "similarity": "cos"}
    raw = run_config(tmp_path, helpers.shared_shards(tmp_path_factory), teacher, {})
    raw["student"] = student
    path = helpers.write_config(tmp_path / "run.yaml", raw)
    assert main(["train", str(path)]) == 0
    assert len(helpers.losses(tmp_path / "run")) == 3
    exported = tmp_path / "run" / "export" / "student"
    stored = json.loads((exported / "config.json").read_text())
    assert (stored["model_type"], stored["num_hidden_layers"], len(stored["layer_types"])) == ("gemma2", 2, 2)
    ours = load_model(exported).eval()
    assert (ours.pooling, ours.passage_prompt, ours.similarity) == ("lasttoken", "text: ", "cos")
    with torch.no_grad():
        passages = ours(**ours.tokenize_passages(TITLES, PASSAGES, 64)).final
        queries = ours(**ours.tokenize_queries(QUERIES, 64)).final
    st = SentenceTransformer(str(exported), device="cpu")
    theirs_p = st.encode_document(join_title(TITLES, PASSAGES), convert_to_tensor=True)
    theirs_q = st.encode_query(QUERIES, convert_to_tensor=True)
    # unit vectors of the same 2-block, 32-wide model run by two programs: float32 rounding, a few 1e-7
    torch.testing.assert_close(passages, theirs_p, atol=1e-5, rtol=0)
    torch.testing.assert_close(queries, theirs_q, atol=1e-5, rtol=0)
    assert F.cosine_similarity(passages, st.encode(join_title(TITLES, PASSAGES), convert_to_tensor=True)).min() < 0.9999


@pytest.mark.parametrize(("family", "kind"), [("llama", "ce"), ("qwen3", "de")])
def test_cache_teacher_of_a_decoder(family: str, kind: str, tmp_path, tmp_path_factory, tokenizer_dirs) -> None:
    shards = helpers.shared_shards(tmp_path_factory)
    extra = {"candidates": "group"} if kind == "ce" else {"query_prompt": PROMPT}
    teacher = section(family, 3, tokenizer_dirs, kind, trained=False, **extra)
    raw = run_config(tmp_path, shards, teacher, {})
    cache_matches_the_live_teacher_and_trains(tmp_path, shards, raw, teacher, family)


def test_evaluate_and_rerank_with_decoder_folders(tmp_path, tmp_path_factory) -> None:
    """A lead_dist decoder DE folder evaluates; a decoder CE re-ranks its run: the re-ranked run holds exactly the
    first stage's top `depth` of each query, in the CE's own order."""
    from test_models_families_verbs import _top

    from lead_dist.models import model_from_config

    beir = helpers.shared_beir(tmp_path_factory)
    folders = {}
    for kind, family in (("de", "qwen3"), ("ce", "gemma2")):
        torch.manual_seed(3)
        model = model_from_config(decoder_config(family, 2), decoder_tokenizer(family), kind)
        model.save(tmp_path / kind)
        folders[kind] = tmp_path / kind
    run = tmp_path / "dev.trec"
    args = ["evaluate", "--model", str(folders["de"]), "--data", str(beir), "--split", "dev", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "dev.json"), "--run-out", str(run)]) == 0
    assert json.loads((tmp_path / "dev.json").read_text())["num_queries"] == 12
    first_stage = _top(run, 5)
    reranked = tmp_path / "ce.trec"
    args = ["rerank", "--model", str(folders["ce"]), "--data", str(beir), "--split", "dev", "--quiet"]
    args += ["--first-stage", str(run), "--depth", "5", "--out", str(tmp_path / "ce.json")]
    assert main([*args, "--run-out", str(reranked)]) == 0
    assert {q: set(docs) for q, docs in _top(reranked, 5).items()} == {q: set(d) for q, d in first_stage.items()}


def test_colbert_over_a_decoder_is_refused_before_any_work(tmp_path, tmp_path_factory, tokenizer_dirs, capsys) -> None:
    teacher = section("llama", 2, tokenizer_dirs, "cb")
    raw = run_config(tmp_path, helpers.shared_shards(tmp_path_factory), teacher, {})
    path = helpers.write_config(tmp_path / "run.yaml", raw)
    assert main(["train", str(path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "teacher.kind" in error[0] and "'cb' is not offered" in error[0], error
    assert not (tmp_path / "run").exists()
