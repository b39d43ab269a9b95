"""The run's models, built from the config's model sections before any engine wraps them."""

from __future__ import annotations

import torch

from lead_dist.config import Config, ModelConfig


def _build_model(section: ModelConfig) -> torch.nn.Module:
    from transformers import AutoConfig

    from lead_dist.models import load_model, model_from_config, student_from_teacher

    if section.path is not None:
        model = load_model(section.path, kind=section.kind, **section.model_options())
        if section.num_layers is not None:
            if section.num_layers > model.num_layers:
                raise ValueError(
                    f"num_layers: {section.num_layers} exceeds the {model.num_layers} layers of {section.path}"
                )
            model = student_from_teacher(model, section.num_layers, kind=section.kind)
        return model
    assert section.config is not None and section.tokenizer is not None  # config validation guarantees it
    kwargs = dict(section.config)
    backbone_config = AutoConfig.for_model(kwargs.pop("model_type", "bert"), **kwargs)
    return model_from_config(backbone_config, section.tokenizer, section.kind, **section.model_options())


def build_models(config: Config) -> dict[str, torch.nn.Module]:
    """The run's models, before any engine wraps them: {"model"} for warm-up, {"student", "teacher"?} to distil.

    Seeded with `config.seed` first, so fresh weights are the same on every rank, in every launch and for anyone
    who rebuilds them (the demo's "before training" student).
    """
    from lead_dist.models import student_from_teacher

    torch.manual_seed(config.seed)
    if config.stage == "warmup":
        assert config.model is not None
        return {"model": _build_model(config.model)}
    assert config.student is not None
    models: dict[str, torch.nn.Module] = {}
    if config.teacher is not None:
        models["teacher"] = _build_model(config.teacher)
    if config.student.from_teacher_layers is not None:
        teacher = models["teacher"]
        if config.student.from_teacher_layers > teacher.num_layers:
            raise ValueError(
                f"student.from_teacher_layers: {config.student.from_teacher_layers} exceeds the teacher's "
                f"{teacher.num_layers} layers"
            )
        student = student_from_teacher(
            teacher, config.student.from_teacher_layers, kind="de", **config.student.model_options()
        )
    else:
        student = _build_model(config.student)
    return {"student": student, **models}
