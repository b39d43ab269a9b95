"""Run configuration: typed dataclasses loaded from YAML, dotted overrides, validation before any work starts.

The schema (every key, its default; `null` = None):

    seed: 888
    stage: distill              # warmup (one model, contrastive) | distill (student + teacher)
    mode: lead                  # distill only: lead | response | contrastive  (warmup: leave unset)
    output_dir: runs/NAME
    data:    {train: DIR_OF_SHARDS|URL|pipe:CMD|SHARD_LIST, num_negatives: 3, query_max_length: 32,
              passage_max_length: 128, num_workers: 0, dev: null (BEIR dir for in-training eval), dev_split: dev,
              dev_max_queries: 200, manifest: null, retries: 3, retry_backoff_s: 1.0}
    student: {path: DIR|null, from_teacher_layers: N|null, config: {BertConfig kwargs}|null, tokenizer: DIR|null,
              kind: de, pooling: null (cls|mean), similarity: null (dot|cos), scale: null, projection_dim: null,
              query_augmentation: null, lr: 5e-5, weight_decay: 0.01, grad_clip: 2.0, deepspeed: null|PATH.json}
    teacher: {same model fields (no from_teacher_layers), trained: true, candidates: null|global|group}  # distill
    model:   {same model fields as the teacher, without trained}                                        # warmup

`candidates` null means `group` for a cross encoder and `global` (every passage of every rank) otherwise; the
student is scored over the teacher's candidate set (contrastive mode without a teacher: global).
    lead:    {k: 5, strategy: random|last|skip|fixed, fixed: null|[[s, t], ...], resample_every: 10,
              temperature: 1.0, layer_temperature: 10.0, reweight: true, detach_targets: false,
              coef: {student: 1.0, teacher: 1.0, response: 1.0, layers: 1.0}}
    train:   {batch_size: 8 (queries per rank), max_steps: 1000, warmup_ratio: 0.1, grad_accum: 1,
              mixed_precision: no|bf16|fp16, log_every: 10, eval_every: 0, save_every: 100, keep_last: 3,
              max_nonfinite_in_row: 5, rank_timeout_s: 300, num_epochs: null}

A model section builds its model from exactly one source: `path` (a saved folder), `from_teacher_layers` (student
only: the teacher's first N blocks) or `config` (fresh random weights from BertConfig kwargs, with `tokenizer`
giving the tokenizer folder). With `path`, `num_layers: N` keeps only the loaded model's first N blocks (e.g. a
student made of all-MiniLM-L6-v2's first 3 layers, whatever the teacher). Model options left null (pooling, similarity, scale for a DE; projection_dim,
query_augmentation for a ColBERT) take the folder's stored value, else the model's default (a cosine DE: scale 20);
options of another kind are an error. `grad_clip: 0` disables clipping. `train.num_epochs`, when set, caps the run at that
many passes over the data in addition to `max_steps`.

Entry points: `load_config(path, overrides)` (YAML + `key.sub=value` overrides, validated) and
`validate_depths(config, student_depth, teacher_depth)` (the checks that need the loaded models).
Modules: `schema` (the dataclasses), `parse` (typing, overrides, loading), `validate` (every cross-key check).
This package imports nothing else of lead_dist.
"""

from __future__ import annotations

from lead_dist.config.parse import apply_overrides, config_from_dict, load_config, parse_override
from lead_dist.config.schema import (
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
    TrainConfig,
)
from lead_dist.config.validate import deepspeed_json, validate, validate_depths, zero_stage

__all__ = [
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
