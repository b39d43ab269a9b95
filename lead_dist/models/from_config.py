"""A model from a run config's model section (`student`, `teacher`, `model`): loaded from `path` (cut to
`num_layers` when set) or built with random weights from `config` + `tokenizer`. Training's set-up
(`lead_dist.train.setup.build_models`) and the teacher cache's build (`lead_dist.teacher_cache.build`) both build
their models here, so neither imports the other.
"""

from __future__ import annotations

import torch

from lead_dist.config import Config, ModelConfig


def build_model(section: ModelConfig) -> torch.nn.Module:
    """The model `section` describes, with the RNG as the caller left it (random weights draw from it)."""
    from transformers import AutoConfig

    from lead_dist.models.factory import load_model, model_from_config, student_from_teacher
    from lead_dist.models.families import DEFAULT_MODEL_TYPE

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
    backbone_config = AutoConfig.for_model(kwargs.pop("model_type", DEFAULT_MODEL_TYPE), **kwargs)
    return model_from_config(backbone_config, section.tokenizer, section.kind, **section.model_options())


def build_teacher(config: Config) -> torch.nn.Module:
    """The live teacher, built from `config.seed` under its own fork of the RNG, so the student's fresh weights are
    the same whether or not the teacher is built (a cached teacher is not; `lead-dist cache-teacher` builds this)."""
    assert config.teacher is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config.teacher)
