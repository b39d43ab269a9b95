"""Run configuration: typed dataclasses loaded from YAML, dotted overrides, validation before any work starts.

The schema is `schema.py`: every key, its type and its default are the dataclass fields there, with what each
means; the allowed-value lists (KINDS, MODES, STRATEGIES, ...) are defined there once for the whole package.
Entry points: `load_config(path, overrides)` (YAML + `key.sub=value` overrides, defaults filled, validated) and
`validate_depths(config, student_depth, teacher_depth)` (the checks that need the loaded models).
Modules: `schema` (the dataclasses), `parse` (typing, overrides, loading, defaults that depend on other keys),
`validate` (every cross-key check; it reads the config and never changes it). This package imports nothing else
of lead_dist.
"""

from __future__ import annotations

from lead_dist.config.parse import apply_overrides, config_from_dict, load_config, parse_override
from lead_dist.config.schema import (
    AUTO_ZERO_KEYS,
    CANDIDATES,
    KINDS,
    MODES,
    POOLINGS,
    PRECISIONS,
    SIMILARITIES,
    STAGES,
    STRATEGIES,
    CoefConfig,
    Config,
    ConfigError,
    DataConfig,
    LeadConfig,
    ModelConfig,
    SpeedConfig,
    TrainConfig,
)
from lead_dist.config.validate import deepspeed_json, validate, validate_depths, zero_stage

__all__ = [
    "AUTO_ZERO_KEYS",
    "CANDIDATES",
    "KINDS",
    "MODES",
    "POOLINGS",
    "PRECISIONS",
    "SIMILARITIES",
    "STAGES",
    "STRATEGIES",
    "CoefConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LeadConfig",
    "ModelConfig",
    "SpeedConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "deepspeed_json",
    "load_config",
    "parse_override",
    "validate",
    "validate_depths",
    "zero_stage",
]
