"""lead_dist.config: YAML + dotted overrides into typed sections; every bad key, value or combination is refused
before any work, with the key, the closest valid name or the fix in the message."""

from __future__ import annotations

import json

import pytest

from lead_dist.config import ConfigError, config_from_dict, load_config, parse_override, validate_depths


def _distill(**sections):
    raw = {"data": {"train": "shards"}, "student": {"path": "s"}, "teacher": {"path": "t"}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def _error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    return str(info.value)


def test_yaml_and_overrides_are_typed(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "# lead-dist train run.yaml\n"
        "data: {train: shards}\nstudent: {path: s, lr: 2e-5}\nteacher: {path: t}\n"
        "lead: {strategy: fixed, k: 2, fixed: [[0, 1], [1, 3]]}\n"
    )
    overrides = ["train.max_steps=20", "teacher.lr=3e-5", "teacher.trained=false", "data.dev=null"]
    config = load_config(path, [*overrides, "train.mixed_precision=no"])
    assert config.train.mixed_precision == "no"  # YAML 1.1 would read the bare word as false
    assert config.train.max_steps == 20 and isinstance(config.train.max_steps, int)
    assert config.student.lr == 2e-5  # YAML reads "2e-5" as a string; the schema makes it the number
    assert config.teacher.lr == 3e-5 and config.teacher.trained is False and config.data.dev is None
    assert config.lead.fixed == [[0, 1], [1, 3]]
    assert config.stage == "distill" and config.mode == "lead" and config.seed == 888
    assert config.trained_models == ("student",)
    assert config.candidates == "global"


def test_unknown_keys_name_the_closest_valid_one(tmp_path):
    assert "unknown config key 'train.bach_size'; did you mean 'train.batch_size'?" in _error(
        _distill(train={"bach_size": 4})
    )
    assert "did you mean 'lead'?" in _error(_distill(laed={"k": 3}))
    path = tmp_path / "bad.yaml"
    path.write_text("data: {train: x}\nstudent: {path: s, learning_rate: 1e-4}\nteacher: {path: t}\n")
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert str(path) in message and "'student.learning_rate'" in message


def test_mistyped_values_name_the_key():
    assert "train.max_steps: expected an integer, got 'ten'" in _error(_distill(train={"max_steps": "ten"}))
    assert "teacher.trained: expected true or false" in _error(_distill(teacher={"trained": "maybe"}))
    assert "teacher.kind: 'bert' is not one of de, cb, ce" in _error(_distill(teacher={"kind": "bert"}))
    assert "student.kind: the student is a dual encoder; set student.kind=de" in _error(
        _distill(student={"kind": "ce"})
    )
    assert "train.mixed_precision: 'bf61' is not one of no, bf16, fp16; did you mean 'bf16'?" in _error(
        _distill(train={"mixed_precision": "bf61"})
    )
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.max_steps")


def test_role_only_keys_stay_in_their_role():
    assert "student.trained: not allowed in the student section (only for the teacher)" in _error(
        _distill(student={"trained": False})
    )
    assert "teacher.from_teacher_layers: not allowed" in _error(_distill(teacher={"from_teacher_layers": 2}))
    assert "model.trained: not allowed in the model section" in _error(
        {"stage": "warmup", "data": {"train": "x"}, "model": {"path": "m", "trained": True}}
    )
    assert "teacher.projection_dim: not an option of a 'de' model" in _error(_distill(teacher={"projection_dim": 8}))


def test_cross_encoder_candidates():
    config = config_from_dict(_distill(teacher={"kind": "ce"}))
    assert config.teacher.candidates == "group" and config.candidates == "group"
    message = _error(_distill(teacher={"kind": "ce", "candidates": "global"}))
    assert "teacher.candidates" in message and "set teacher.candidates=group" in message
    # The own group without hard negatives is the positive alone: one-hot distributions, a loss of 0.
    message = _error(_distill(teacher={"kind": "ce"}, data={"num_negatives": 0}))
    assert "data.num_negatives" in message and "--negatives-run" in message


def test_stage_and_mode_mismatches():
    assert "mode: applies to stage distill only" in _error(
        {"stage": "warmup", "mode": "lead", "data": {"train": "x"}, "model": {"path": "m"}}
    )
    assert "student: not used by stage warmup" in _error(
        {"stage": "warmup", "data": {"train": "x"}, "model": {"path": "m"}, "student": {"path": "s"}}
    )
    assert "model: used by stage warmup only" in _error(_distill(model={"path": "m"}))
    assert "teacher: mode response distils from a teacher" in _error(
        {"mode": "response", "data": {"train": "x"}, "student": {"path": "s"}}
    )
    contrastive = config_from_dict({"mode": "contrastive", "data": {"train": "x"}, "student": {"path": "s"}})
    assert contrastive.trained_models == ("student",)
    assert "set exactly one of student.path, student.config, student.from_teacher_layers" in _error(
        _distill(student={"from_teacher_layers": 2})
    )
    assert "lead.fixed: only used with lead.strategy=fixed" in _error(_distill(lead={"fixed": [[0, 0]]}))


def test_k_is_checked_against_the_loaded_depths():
    config = config_from_dict(_distill(lead={"k": 5}))
    validate_depths(config, student_depth=6, teacher_depth=12)
    with pytest.raises(ConfigError, match=r"lead.k: 5 layers cannot be drawn from the 4-layer student; set lead.k<=4"):
        validate_depths(config, student_depth=4, teacher_depth=12)
    fixed = config_from_dict(_distill(lead={"strategy": "fixed", "k": 1, "fixed": [[0, 12]]}))
    with pytest.raises(ConfigError, match=r"pair \[0, 12\] is out of range"):
        validate_depths(fixed, student_depth=6, teacher_depth=12)


def _ds(tmp_path, name, content) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(content))
    return str(path)


def test_deepspeed_combinations(tmp_path):
    zero2 = _ds(tmp_path, "z2", {"zero_optimization": {"stage": 2}, "_about": "comments are allowed"})
    zero3 = _ds(tmp_path, "z3", {"zero_optimization": {"stage": 3}})
    config = config_from_dict(_distill(student={"deepspeed": zero2}, teacher={"deepspeed": zero3}))
    assert config.student.deepspeed == zero2
    # A trained teacher beside a DeepSpeed student must have its own engine config.
    assert "teacher.deepspeed: student runs under DeepSpeed" in _error(_distill(student={"deepspeed": zero2}))
    # A frozen teacher is an inference engine, which only ZeRO-3 partitions.
    assert "teacher.deepspeed: a frozen teacher" in _error(
        _distill(student={"deepspeed": zero2}, teacher={"deepspeed": zero2, "trained": False})
    )
    # In-training evaluation runs on one process, which a ZeRO-3 student cannot.
    message = _error(
        _distill(
            data={"dev": "beir"},
            student={"deepspeed": zero3},
            teacher={"deepspeed": zero3},
            train={"eval_every": 10},
        )
    )
    assert "train.eval_every" in message and "ZeRO-3" in message
    assert "train_micro_batch_size_per_gpu=16 disagrees with the run config (8)" in _error(
        _distill(
            student={"deepspeed": _ds(tmp_path, "mb", {"train_micro_batch_size_per_gpu": 16})},
            teacher={"trained": False},
        )
    )
    assert "remove the optimizer/scheduler sections" in _error(
        _distill(
            student={"deepspeed": _ds(tmp_path, "opt", {"optimizer": {"type": "Adam"}})}, teacher={"trained": False}
        )
    )
    assert "bf16.enabled=true but train.mixed_precision='no'" in _error(
        _distill(student={"deepspeed": _ds(tmp_path, "bf", {"bf16": {"enabled": True}})}, teacher={"trained": False})
    )
    assert "student.deepspeed: DeepSpeed JSON missing.json does not exist" in _error(
        _distill(student={"deepspeed": "missing.json"}, teacher={"trained": False})
    )


def test_num_layers_keeps_the_first_blocks_of_a_loaded_model(tiny_bert_dir):
    import torch

    from lead_dist.models import load_model
    from lead_dist.train.setup import build_models

    raw = _distill(student={"path": str(tiny_bert_dir), "num_layers": 1}, teacher={"path": str(tiny_bert_dir)})
    models = build_models(config_from_dict(raw))
    student, full = models["student"], load_model(tiny_bert_dir, kind="de")
    assert student.num_layers == 1 and full.num_layers == 2
    tokens = full.tokenize_queries(["how do tides form"], 16)
    with torch.no_grad():
        # the truncated student's final output is the full model's layer 0
        assert torch.allclose(student(**tokens).final, full(**tokens, layers=(0,)).layers[0], atol=1e-6)
    assert "student.num_layers" in _error(
        _distill(student={"path": None, "config": {}, "tokenizer": "t", "num_layers": 1})
    )
    assert "must be >= 1" in _error(_distill(student={"path": "s", "num_layers": 0}))
