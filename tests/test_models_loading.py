"""Strict backbone loading, fresh parts reported, lead_dist.json, save/load round trips, AutoModel compatibility."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, BertForMaskedLM

from lead_dist.models import BackboneWeightsError, load_model


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


def _rewrite_weights(folder: Path, edit) -> None:
    weights = load_file(str(folder / "model.safetensors"))
    edit(weights)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_missing_backbone_weight_is_named(tiny_bert_dir, tmp_path) -> None:
    folder = _copy(tiny_bert_dir, tmp_path)
    _rewrite_weights(folder, lambda w: w.pop("encoder.layer.1.output.dense.bias"))
    with pytest.raises(BackboneWeightsError, match=r"missing.*encoder\.layer\.1\.output\.dense\.bias"):
        load_model(folder, kind="de")


def test_unexpected_weight_is_named(tiny_bert_dir, tmp_path) -> None:
    folder = _copy(tiny_bert_dir, tmp_path)
    _rewrite_weights(folder, lambda w: w.update({"encoder.layer.2.output.dense.bias": torch.zeros(32)}))
    with pytest.raises(BackboneWeightsError, match=r"unexpected.*encoder\.layer\.2\.output\.dense\.bias"):
        load_model(folder, kind="de")


def test_shape_mismatch_is_named(tiny_bert_dir, tmp_path) -> None:
    folder = _copy(tiny_bert_dir, tmp_path)
    _rewrite_weights(folder, lambda w: w.update({"encoder.layer.0.output.dense.bias": torch.zeros(33)}))
    with pytest.raises(BackboneWeightsError, match=r"shape mismatch.*encoder\.layer\.0\.output\.dense\.bias"):
        load_model(folder, kind="de")


def test_pooler_and_pretraining_heads_are_ignored_and_reported(tiny_bert_config, tiny_bert_dir, tmp_path) -> None:
    """A BertForMaskedLM checkpoint (prefixed keys, MLM head) and a pooler load; the skipped keys are listed."""
    torch.manual_seed(0)
    mlm = BertForMaskedLM(tiny_bert_config)
    folder = tmp_path / "mlm"
    mlm.save_pretrained(folder, safe_serialization=True)
    _rewrite_weights(folder, lambda w: w.update({"bert.pooler.dense.bias": torch.zeros(32)}))
    shutil.copy(tiny_bert_dir / "tokenizer.json", folder)
    shutil.copy(tiny_bert_dir / "tokenizer_config.json", folder)
    model = load_model(folder, kind="de")
    assert any("pooler.dense.bias" in key for key in model.ignored_keys)
    assert any("cls.predictions" in key for key in model.ignored_keys)
    assert not any(key.startswith("pooler") for key, _ in model.backbone.named_parameters())
    stored = load_file(str(folder / "model.safetensors"))
    torch.testing.assert_close(
        model.backbone.embeddings.word_embeddings.weight, stored["bert.embeddings.word_embeddings.weight"]
    )


def test_plain_folder_needs_a_kind(tiny_bert_dir) -> None:
    with pytest.raises(ValueError, match="no lead_dist.json.*kind"):
        load_model(tiny_bert_dir)


def test_missing_folder_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(tmp_path / "nowhere", kind="de")


def test_unreachable_hub_id_names_both_readings() -> None:
    # HF_HUB_OFFLINE=1 (conftest, Makefile): the id is tried against the local hub cache only.
    with pytest.raises(FileNotFoundError, match="'no-such-org/no-such-model' is not a local folder.*hub"):
        load_model("no-such-org/no-such-model", kind="de")


def test_unknown_option_is_named(tiny_bert_dir) -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['poolling'\].*'de'"):
        load_model(tiny_bert_dir, kind="de", poolling="mean")


@pytest.mark.parametrize(
    ("kind", "options", "fresh"),
    [
        ("ce", {}, ["head.bias", "head.weight"]),
        ("cb", {"projection_dim": 8}, ["projection.weight"]),
        ("cb", {}, []),
        ("de", {}, []),
    ],
)
def test_fresh_parts_are_reported(tiny_bert_dir, caplog, kind, options, fresh) -> None:
    with caplog.at_level(logging.WARNING, logger="lead_dist"):
        model = load_model(tiny_bert_dir, kind=kind, **options)
    assert model.fresh_parameters == fresh
    warned = [r.getMessage() for r in caplog.records if "initialised fresh" in r.getMessage()]
    assert (len(warned) == 1 and all(name in warned[0] for name in fresh)) if fresh else not warned


def _outputs(model):
    with torch.no_grad():
        if model.kind == "ce":
            return model(**model.tokenize_pairs(["q a", "q b"], ["t", ""], ["text a", "longer text b"], 24), layers=[0])
        reps = model(**model.tokenize_passages(["t", ""], ["text a", "longer text b"], 24), layers=[0, 1])
        return reps.final, reps.layers


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("de", {"pooling": "mean", "similarity": "cos", "scale": 5.0}),
        ("cb", {"projection_dim": 8, "query_augmentation": False}),
        ("ce", {}),
    ],
)
def test_save_load_round_trip_is_identical(tiny_bert_dir, tmp_path, kind, options) -> None:
    model = load_model(tiny_bert_dir, kind=kind, **options).eval()
    with torch.no_grad():  # make the fresh head differ from any default init
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    model.save(tmp_path / "saved")
    stored = json.loads((tmp_path / "saved" / "lead_dist.json").read_text())
    assert stored["kind"] == kind and all(stored["options"][k] == v for k, v in options.items())
    assert (tmp_path / "saved" / "lead_head.safetensors").exists() == (kind != "de")
    assert not list((tmp_path / "saved").glob("*.bin"))  # safetensors only
    again = load_model(tmp_path / "saved").eval()
    assert again.kind == kind and again.options == model.options and again.fresh_parameters == []
    for a, b in zip(_outputs(model), _outputs(again), strict=True):
        assert torch.equal(a, b)
    # transformers' AutoModel reads the same backbone (it adds its own fresh pooler, which we never use).
    plain = AutoModel.from_pretrained(tmp_path / "saved").eval()
    tokens = model.tokenize_queries(["q a"], 8) if kind != "ce" else model.tokenize_pairs(["q"], [""], ["t"], 8)
    with torch.no_grad():
        assert torch.equal(plain(**tokens).last_hidden_state, model.backbone(**tokens).last_hidden_state)


def test_head_file_must_match_the_options(tiny_bert_dir, tmp_path) -> None:
    load_model(tiny_bert_dir, kind="cb", projection_dim=8).save(tmp_path / "cb")
    with pytest.raises(ValueError, match=r"lead_head\.safetensors.*wrong shape \['projection\.weight'\]"):
        load_model(tmp_path / "cb", projection_dim=4)


def test_loading_another_kind_gives_a_fresh_head(tiny_bert_dir, tmp_path) -> None:
    load_model(tiny_bert_dir, kind="de").save(tmp_path / "de")
    ce = load_model(tmp_path / "de", kind="ce")
    assert ce.kind == "ce" and ce.fresh_parameters == ["head.bias", "head.weight"]
    ce.save(tmp_path / "de")  # overwrite the DE folder with a CE: no sentence-transformers modules remain
    assert not (tmp_path / "de" / "modules.json").exists() and not (tmp_path / "de" / "1_Pooling").exists()
    assert load_model(tmp_path / "de").kind == "ce"


def test_bad_lead_config_names_the_key(tiny_bert_dir, tmp_path) -> None:
    folder = _copy(tiny_bert_dir, tmp_path)
    (folder / "lead_dist.json").write_text(json.dumps({"format": 1, "kind": "dual"}))
    with pytest.raises(ValueError, match=r"lead_dist\.json: key 'kind' must be one of"):
        load_model(folder)


def test_unknown_stored_option_names_folder_and_option(tiny_bert_dir, tmp_path) -> None:
    folder = _copy(tiny_bert_dir, tmp_path)
    (folder / "lead_dist.json").write_text(json.dumps({"format": 1, "kind": "de", "options": {"pool": "cls"}}))
    with pytest.raises(ValueError, match=r"model: unknown option\(s\) \['pool'\]"):
        load_model(folder)


@pytest.mark.parametrize("kind", ["de", "cb", "ce"])
def test_models_come_back_wholly_in_eval_mode(tiny_bert_dir, kind) -> None:
    model = load_model(tiny_bert_dir, kind=kind)
    assert not any(module.training for module in model.modules())
