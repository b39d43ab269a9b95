"""The verbs with the new backbone families (MPNet, DeBERTa-v2/v3, ModernBERT), on tiny random models built from
config sections with tiny tokenizers of each family (tests/family_models.py), on the shared tiny BEIR shards:
- `train` with a teacher of one family and a student of another, each family as teacher and as student, teachers of
  each kind (DE, CB, CE), joint and frozen, and a student cut from a teacher's first blocks; the exported student
  encodes the same in sentence-transformers;
- `cache-teacher` of a frozen teacher of each new family (one kind each): the cached outputs equal the live
  teacher's within the storage rounding, and `train` runs from the cache;
- `encode`, `evaluate`, `rerank` and `mine` on those models' folders;
- a model_type outside the table is refused before any work, with one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_train_loop_helpers as helpers
import torch
import torch.nn.functional as F
from cache_bounds import value_bound
from family_models import NEW_FAMILIES, PASSAGES, TITLES, config, tokenizer
from rounding import assert_within
from sentence_transformers import SentenceTransformer
from test_train_loop_helpers import fresh_accelerate_state  # noqa: F401 (a fixture, used by name)

from lead_dist.cli import main
from lead_dist.config import config_from_dict
from lead_dist.data import collate_for
from lead_dist.data.stream import TrainStream
from lead_dist.models import load_model
from lead_dist.models.from_config import build_teacher
from lead_dist.models.tokenization import join_title
from lead_dist.teacher_cache.read import CachedTeacher

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("family_tokenizers")
    for family in NEW_FAMILIES:
        tokenizer(family).save_pretrained(root / family)
    return {family: str(root / family) for family in NEW_FAMILIES}


def section(family: str, layers: int, tokenizers: dict[str, str], kind: str = "de", **extra) -> dict:
    """A model section built from a config of `family` (its tiny tokenizer's ids and size)."""
    built = {k: v for k, v in config(family, layers).to_diff_dict().items() if k != "transformers_version"}
    options = {"projection_dim": 16} if kind == "cb" else {}
    return {"config": built, "tokenizer": tokenizers[family], "kind": kind, "lr": 1e-3, **options, **extra}


def run_config(tmp_path: Path, shards: Path, teacher: dict, student: dict, **extra) -> dict:
    raw = helpers.tiny_config(shards, tmp_path / "run", helpers.minilm_tokenizer(), **extra)
    raw["teacher"], raw["student"] = teacher, student
    raw["train"] |= {"max_steps": 3}
    return raw


def exported_encodes_like_sentence_transformers(folder: Path) -> None:
    ours = load_model(folder).eval()
    with torch.no_grad():
        vectors = ours(**ours.tokenize_passages(TITLES, PASSAGES, 64)).final
    theirs = SentenceTransformer(str(folder), device="cpu").encode(join_title(TITLES, PASSAGES), convert_to_tensor=True)
    assert F.cosine_similarity(vectors, theirs, dim=-1).min() >= 0.9999


TRAIN_CASES = {
    # teacher family, kind, trained; student family (None: cut from the teacher's first 2 blocks)
    "mpnet DE joint -> deberta-v2": ("mpnet", "de", True, "deberta-v2"),
    "deberta-v2 CE frozen -> modernbert": ("deberta-v2", "ce", False, "modernbert"),
    "modernbert CB joint -> mpnet": ("modernbert", "cb", True, "mpnet"),
    "deberta-v2 DE frozen -> its first 2 blocks": ("deberta-v2", "de", False, None),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_across_families_exports_a_student_sentence_transformers_reads(
    case: str, tmp_path, tmp_path_factory, tokenizer_dirs
) -> None:
    teacher_family, kind, trained, student_family = TRAIN_CASES[case]
    teacher = section(
        teacher_family, 3, tokenizer_dirs, kind, trained=trained, pooling="mean" if kind == "de" else None
    )
    if kind == "ce":
        teacher["candidates"] = "group"
    if student_family is None:
        student = {"from_teacher_layers": 2, "kind": "de", "lr": 1e-3}
    else:
        student = section(student_family, 2, tokenizer_dirs, pooling="mean", similarity="cos")
    raw = run_config(tmp_path, helpers.shared_shards(tmp_path_factory), teacher, student)
    path = helpers.write_config(tmp_path / "run.yaml", raw)
    assert main(["train", str(path)]) == 0
    losses = helpers.losses(tmp_path / "run")
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    exported = tmp_path / "run" / "export" / "student"
    expected_family = student_family or teacher_family
    assert json.loads((exported / "config.json").read_text())["model_type"] == expected_family
    if student_family is None:
        assert json.loads((exported / "config.json").read_text())["num_hidden_layers"] == 2
    exported_encodes_like_sentence_transformers(exported)


CACHE_CASES = {"mpnet": "ce", "deberta-v2": "cb", "modernbert": "de"}


@pytest.mark.parametrize("family", CACHE_CASES)
def test_cache_teacher_of_each_new_family(family: str, tmp_path, tmp_path_factory, tokenizer_dirs) -> None:
    kind = CACHE_CASES[family]
    shards = helpers.shared_shards(tmp_path_factory)
    teacher = section(family, 3, tokenizer_dirs, kind, trained=False, pooling="mean" if kind == "de" else None)
    if kind == "ce":
        teacher["candidates"] = "group"
    student = section(NEW_FAMILIES[(NEW_FAMILIES.index(family) + 1) % 3], 2, tokenizer_dirs)
    raw = run_config(tmp_path, shards, teacher, student)
    cache_matches_the_live_teacher_and_trains(tmp_path, shards, raw, teacher, family)


def test_retrieval_verbs_with_models_of_the_new_families(tmp_path, tmp_path_factory, tokenizer_dirs) -> None:
    """A DE of each new family evaluates (and encodes, and mines from its run); CB and CE models of the families
    re-rank that run: the re-ranked run holds exactly the first stage's top `depth` of each query."""
    from family_models import tiny

    from lead_dist.models import model_from_config

    beir = helpers.shared_beir(tmp_path_factory)
    for index, family in enumerate(NEW_FAMILIES):
        folders = {}
        for kind in ("de", "cb", "ce"):
            cfg, tok = tiny(family, 2)
            torch.manual_seed(index)
            model_from_config(cfg, tok, kind, **({"pooling": "mean"} if kind == "de" else {})).save(
                tmp_path / f"{family}-{kind}"
            )
            folders[kind] = tmp_path / f"{family}-{kind}"
        out = tmp_path / family
        assert (
            main(["encode", "--model", str(folders["de"]), "--corpus", str(beir), "--out", str(out / "emb"), "--quiet"])
            == 0
        )
        run = out / "dev.trec"
        args = ["evaluate", "--model", str(folders["de"]), "--data", str(beir), "--split", "dev", "--quiet"]
        assert (
            main([*args, "--out", str(out / "dev.json"), "--run-out", str(run), "--embeddings", str(out / "emb")]) == 0
        )
        assert json.loads((out / "dev.json").read_text())["num_queries"] == 12
        first_stage = _top(run, 5)
        for kind in ("cb", "ce"):
            reranked = out / f"{kind}.trec"
            args = ["rerank", "--model", str(folders[kind]), "--data", str(beir), "--split", "dev", "--quiet"]
            args += ["--first-stage", str(run), "--depth", "5", "--out", str(out / f"{kind}.json")]
            assert main([*args, "--run-out", str(reranked)]) == 0
            assert {q: set(docs) for q, docs in _top(reranked, 5).items()} == {
                q: set(docs) for q, docs in first_stage.items()
            }
        mined = out / "mined"
        assert main(["mine", "--run", str(run), "--input", str(beir), "--split", "dev", "--depth", "2:5",
                     "--out", str(mined), "--negatives-only"]) == 0  # fmt: skip
        assert (mined / "negatives.trec").is_file()


def _top(run: Path, depth: int) -> dict[str, list[str]]:
    ranked: dict[str, list[tuple[int, str]]] = {}
    for line in run.read_text().splitlines():
        qid, _q0, doc, rank, _score, _tag = line.split()
        ranked.setdefault(qid, []).append((int(rank), doc))
    return {qid: [doc for _rank, doc in sorted(rows)[:depth]] for qid, rows in ranked.items()}


def test_a_model_type_outside_the_table_is_refused_before_any_work(tmp_path, tmp_path_factory, capsys) -> None:
    shards = helpers.shared_shards(tmp_path_factory)
    raw = helpers.tiny_config(shards, tmp_path / "run", helpers.minilm_tokenizer())
    raw["teacher"]["config"] = raw["teacher"]["config"] | {"model_type": "gpt2"}
    path = helpers.write_config(tmp_path / "run.yaml", raw)
    assert main(["train", str(path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "teacher.config.model_type" in error[0] and "'gpt2'" in error[0]
    assert "mpnet" in error[0] and "modernbert" in error[0]  # the supported types are listed
    assert not (tmp_path / "run").exists()  # nothing was written

    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert main(["evaluate", "--model", str(folder), "--data", str(helpers.shared_beir(tmp_path_factory)),
                 "--split", "dev", "--out", str(tmp_path / "r.json")]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--model" in error[0] and "'gpt2' is not supported" in error[0]


def cache_matches_the_live_teacher_and_trains(
    tmp_path: Path, shards: Path, raw: dict, teacher: dict, family: str
) -> None:
    """`cache-teacher` of the run `raw` (frozen `teacher`): the cached per-layer outputs of a batch equal the live
    teacher's within the cache's fp16 storage rounding (ColBERT: on the tokens that count, the cache stores no
    padding), and `train` runs its 3 steps from the cache."""
    kind = teacher["kind"]
    path = helpers.write_config(tmp_path / "run.yaml", raw)
    cache = tmp_path / "cache"
    assert main(["cache-teacher", str(path), "--out", str(cache), "--shard-size", "64"]) == 0

    config = config_from_dict(raw | {"teacher": teacher | {"cache": str(cache)}})
    live, cached = build_teacher(config).eval(), CachedTeacher.open(config)
    examples = next(iter(TrainStream(shards, batch_size=4, num_negatives=3, seed=config.seed)))
    tokens = collate_for(live, examples, config.data.query_max_length, config.data.passage_max_length)
    rows = cached.collate(examples)
    with torch.no_grad():
        for part in tokens:
            want, got = live(**tokens[part], layers=(0, 1, 2)), cached(**rows[part], layers=(0, 1, 2))
            if kind == "ce":
                for w, g in zip(want, got, strict=True):
                    assert_within(g, w, value_bound(w.unsqueeze(-1), "fp16").squeeze(-1), f"{family} ce {part}")
            elif kind == "cb":
                keep = want.mask[:, : got.mask.shape[1], None].bool()
                want_layers = want.layers[:, :, : keep.shape[1]]
                assert_within(got.layers, want_layers * keep, value_bound(want_layers, "fp16") * keep, family)
            else:
                assert_within(got.layers, want.layers, value_bound(want.layers, "fp16"), f"{family} de {part}")
                assert_within(got.final, want.final, value_bound(want.final, "fp16"), f"{family} de {part}")
    cached_run = helpers.write_config(tmp_path / "cached.yaml", raw | {"teacher": teacher | {"cache": str(cache)}})
    assert main(["train", str(cached_run), f"output_dir={tmp_path / 'cached_run'}"]) == 0
    assert len(helpers.losses(tmp_path / "cached_run")) == 3
