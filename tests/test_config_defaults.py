"""Defaults that depend on other keys are filled at parsing; validation only reads the config it checks."""

from __future__ import annotations

import copy

from lead_dist.config import config_from_dict, validate


def test_parsing_fills_mode_and_candidates_and_validate_changes_nothing() -> None:
    raw = {"data": {"train": "shards"}, "student": {"path": "s"}, "teacher": {"path": "t", "kind": "ce"}}
    config = config_from_dict(raw)
    assert (config.mode, config.teacher.candidates, config.student.candidates) == ("lead", "group", "global")
    warmup = config_from_dict({"stage": "warmup", "data": {"train": "x"}, "model": {"path": "m"}})
    assert (warmup.mode, warmup.model.candidates) == (None, "global")
    for checked in (config, warmup):
        before = copy.deepcopy(checked)
        validate(checked)
        assert checked == before


def test_exponent_without_a_dot_is_a_number_in_files_and_overrides(tmp_path) -> None:
    """YAML 1.1 (PyYAML) reads `1e-6` as a string; a model's free-form `config:` section then handed transformers a
    string epsilon. Files and overrides read it as YAML 1.2 does; a quoted one stays a string."""
    from lead_dist.config import load_config
    from lead_dist.config.parse import read_yaml

    path = tmp_path / "run.yaml"
    path.write_text(
        "data: {train: shards}\n"
        "teacher: {lr: 2e-5, tokenizer: tok, config: {layer_norm_eps: 1e-7, note: '1e-6', tag: 1e5x}}\n"
        "student: {from_teacher_layers: 1}\n"
    )
    raw = read_yaml(path)
    assert raw["teacher"]["config"] == {"layer_norm_eps": 1e-7, "note": "1e-6", "tag": "1e5x"}
    config = load_config(path, ["teacher.config.rms_norm_eps=-1E+2"])
    assert config.teacher.lr == 2e-5 and isinstance(config.teacher.config["layer_norm_eps"], float)
    assert config.teacher.config["rms_norm_eps"] == -100.0
