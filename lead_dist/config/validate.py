"""Every check across keys, run before any work: stages and modes, model sources, DeepSpeed JSONs, LEAD layers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from lead_dist.config.schema import (
    AUTO_ZERO_KEYS,
    CANDIDATES,
    DE_OPTION_KEYS,
    KINDS,
    MODES,
    POOLINGS,
    PRECISIONS,
    SIMILARITIES,
    STAGES,
    STRATEGIES,
    Config,
    ConfigError,
    ModelConfig,
    closest_hint,
)


def _one_of(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}{closest_hint(str(value), choices)}")


def _finite_numbers(node: Any, key: str = "") -> None:
    """Every float of the config, however deep (sections, dicts, lists), is a finite number: NaN passes every `<`
    and `==` range check, and an infinite learning rate or temperature ruins a run only steps later."""
    if dataclasses.is_dataclass(node):
        for field in dataclasses.fields(node):
            _finite_numbers(getattr(node, field.name), f"{key}.{field.name}" if key else field.name)
    elif isinstance(node, dict):
        for name, value in node.items():
            _finite_numbers(value, f"{key}.{name}")
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            _finite_numbers(value, f"{key}[{index}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{key}: must be a finite number, got {node}")


def _positive(key: str, value: float | int, *, zero_ok: bool = False) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{key}: must be {'>= 0' if zero_ok else '> 0'}, got {value}")


def _validate_model(name: str, m: ModelConfig) -> None:
    _one_of(f"{name}.kind", m.kind, KINDS)
    for key, allowed in (("pooling", POOLINGS), ("similarity", SIMILARITIES), ("layer_pooling", POOLINGS),
                         ("layer_similarity", SIMILARITIES)):  # fmt: skip
        if getattr(m, key) is not None:
            _one_of(f"{name}.{key}", getattr(m, key), allowed)
    own = {"de": DE_OPTION_KEYS, "cb": ("projection_dim", "query_augmentation"), "ce": ()}
    for option in (*DE_OPTION_KEYS, "projection_dim", "query_augmentation"):
        if getattr(m, option) is not None and option not in own[m.kind]:
            raise ConfigError(f"{name}.{option}: not an option of a {m.kind!r} model; remove it")
    _one_of(f"{name}.candidates", m.candidates, CANDIDATES)
    sources = [k for k in ("path", "from_teacher_layers", "config") if getattr(m, k) is not None]
    if len(sources) != 1:
        raise ConfigError(
            f"{name}: set exactly one of {name}.path, {name}.config"
            + (f", {name}.from_teacher_layers" if name == "student" else "")
            + f" (got {', '.join(sources) or 'none'})"
        )
    if m.config is not None and m.tokenizer is None:
        raise ConfigError(f"{name}.tokenizer: a model built from {name}.config needs a tokenizer folder")
    if m.from_teacher_layers is not None and m.from_teacher_layers < 1:
        raise ConfigError(f"{name}.from_teacher_layers: must be >= 1, got {m.from_teacher_layers}")
    if m.num_layers is not None:
        if m.path is None:
            raise ConfigError(f"{name}.num_layers: keeps the first N blocks of a loaded model; set {name}.path too")
        if m.num_layers < 1:
            raise ConfigError(f"{name}.num_layers: must be >= 1, got {m.num_layers}")
    _positive(f"{name}.lr", m.lr)
    _positive(f"{name}.weight_decay", m.weight_decay, zero_ok=True)
    _positive(f"{name}.grad_clip", m.grad_clip, zero_ok=True)
    for key in ("scale", "layer_scale"):
        if getattr(m, key) is not None:
            _positive(f"{name}.{key}", getattr(m, key))
    if m.projection_dim is not None:
        _positive(f"{name}.projection_dim", m.projection_dim)
    if m.deepspeed is not None and not Path(m.deepspeed).is_file():
        raise ConfigError(f"{name}.deepspeed: DeepSpeed JSON {m.deepspeed} does not exist")


def deepspeed_json(m: ModelConfig | None) -> dict[str, Any] | None:
    """The parsed DeepSpeed JSON of a model section, or None when the section has none."""
    if m is None or m.deepspeed is None:
        return None
    try:
        return json.loads(Path(m.deepspeed).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"deepspeed JSON {m.deepspeed}: not valid JSON: {exc}") from exc


def zero_stage(m: ModelConfig | None) -> int | None:
    """ZeRO stage of a model section's DeepSpeed JSON (None: not under DeepSpeed)."""
    ds = deepspeed_json(m)
    if ds is None:
        return None
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def _validate_deepspeed(name: str, m: ModelConfig, config: Config) -> None:
    ds = deepspeed_json(m)
    if ds is None:
        return
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        value = ds.get(key, "auto")
        expected = {
            "train_micro_batch_size_per_gpu": config.train.batch_size,
            "gradient_accumulation_steps": config.train.grad_accum,
            "gradient_clipping": m.grad_clip,
        }[key]
        if value != "auto" and value != expected:
            raise ConfigError(
                f'{m.deepspeed}: {key}={value} disagrees with the run config ({expected}); set it to "auto" '
                "so the YAML config is the one source of truth"
            )
    for precision in ("bf16", "fp16"):
        enabled = ds.get(precision, {}).get("enabled", False)
        if enabled is True and config.train.mixed_precision != precision:
            raise ConfigError(
                f"{m.deepspeed}: {precision}.enabled=true but train.mixed_precision={config.train.mixed_precision!r}; "
                f'set {precision}.enabled to "auto" or train.mixed_precision={precision}'
            )
    unknown_auto = [k for k, v in ds.get("zero_optimization", {}).items() if v == "auto" and k not in AUTO_ZERO_KEYS]
    if unknown_auto:
        raise ConfigError(
            f'{m.deepspeed}: zero_optimization.{unknown_auto[0]} is "auto", which lead_dist cannot fill; give a number'
        )
    if "optimizer" in ds or "scheduler" in ds:
        raise ConfigError(
            f"{m.deepspeed}: remove the optimizer/scheduler sections; lead_dist builds AdamW and the linear "
            f"warm-up schedule from {name}.lr, {name}.weight_decay and train.warmup_ratio"
        )


def validate(config: Config) -> None:
    """Every check that needs no model loaded. Raises ConfigError naming the key and the fix.

    Reads the config and never changes it: the defaults that depend on other keys (mode, candidates) are filled
    by `parse.fill_defaults` before this runs.
    """
    _finite_numbers(config)
    _one_of("stage", config.stage, STAGES)
    if config.stage == "warmup":
        if config.mode is not None:
            raise ConfigError("mode: applies to stage distill only; remove it (warm-up is always contrastive)")
        if config.model is None:
            raise ConfigError("model: stage warmup trains one model; add a model section (path/config, kind, ...)")
        for section in ("student", "teacher"):
            if getattr(config, section) is not None:
                raise ConfigError(f"{section}: not used by stage warmup; put the one model under 'model'")
        _validate_model("model", config.model)
        models = {"model": config.model}
    else:
        _one_of("mode", config.mode, MODES)
        if config.model is not None:
            raise ConfigError("model: used by stage warmup only; for distill use 'student' and 'teacher'")
        if config.student is None:
            raise ConfigError("student: stage distill needs a student section")
        if config.teacher is None and config.mode != "contrastive":
            raise ConfigError(f"teacher: mode {config.mode} distils from a teacher; add a teacher section")
        if config.student.kind != "de":
            raise ConfigError(
                f"student.kind: the student is a dual encoder; set student.kind=de (got {config.student.kind!r})"
            )
        if config.student.from_teacher_layers is not None and config.teacher is None:
            raise ConfigError("student.from_teacher_layers: needs a teacher section to copy the layers from")
        models = {"student": config.student}
        if config.teacher is not None:
            if config.teacher.from_teacher_layers is not None:  # unreachable through YAML; kept for direct use
                raise ConfigError("teacher.from_teacher_layers: only the student can be cut from the teacher")
            _validate_model("teacher", config.teacher)
            models["teacher"] = config.teacher
        _validate_model("student", config.student)
    for name, m in models.items():
        if m.kind == "ce" and m.candidates == "global":
            raise ConfigError(
                f"{name}.candidates: a cross encoder scores only the pairs it is given, so it cannot score the "
                f"global batch; set {name}.candidates=group"
            )
        if m.candidates == "group" and config.data.num_negatives == 0:
            # The own-group candidate set is [positive] alone: every distribution is one-hot and every loss is 0.
            raise ConfigError(
                f"data.num_negatives: {name} uses candidates=group (its own query's passages), which needs hard "
                "negatives; prepare shards with --negatives-run (or mine them) and set data.num_negatives >= 1"
            )

    _validate_teacher_cache(config)
    _validate_data(config)
    _validate_train(config)
    _validate_lead(config)
    _validate_engines(config, models)


def _validate_teacher_cache(config: Config) -> None:
    teacher = config.teacher
    if teacher is None or teacher.cache is None:
        return
    if teacher.trained:
        raise ConfigError(
            "teacher.cache: a trained teacher changes every step, so its outputs cannot be cached; set "
            "teacher.trained=false or remove teacher.cache"
        )
    if teacher.deepspeed is not None:
        raise ConfigError("teacher.deepspeed: a cached teacher is never built, so it has no engine; remove it")
    # that the folder exists is an input check (train/preflight.py), like data.train's: a config is valid before
    # its inputs are built


def _validate_data(config: Config) -> None:
    d = config.data
    if d.train is None:
        raise ConfigError(
            "data.train: set it to a folder of training shards written by `lead-dist prepare` (or its URL)"
        )
    _positive("data.num_negatives", d.num_negatives, zero_ok=True)
    _positive("data.query_max_length", d.query_max_length)
    _positive("data.passage_max_length", d.passage_max_length)
    _positive("data.num_workers", d.num_workers, zero_ok=True)
    _positive("data.dev_max_queries", d.dev_max_queries)
    _positive("data.retries", d.retries, zero_ok=True)
    _positive("data.retry_backoff_s", d.retry_backoff_s, zero_ok=True)
    _one_of("data.on_bad_shard", d.on_bad_shard, ("error", "skip"))


def _validate_train(config: Config) -> None:
    t = config.train
    _one_of("train.mixed_precision", t.mixed_precision, PRECISIONS)
    _validate_speed(config)
    for key in ("batch_size", "max_steps", "grad_accum", "log_every", "keep_last", "max_nonfinite_in_row"):
        _positive(f"train.{key}", getattr(t, key))
    for key in ("eval_every", "save_every"):
        _positive(f"train.{key}", getattr(t, key), zero_ok=True)
    _positive("train.rank_timeout_s", t.rank_timeout_s)
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
    if t.num_epochs is not None:
        _positive("train.num_epochs", t.num_epochs)
    if t.eval_every > 0 and config.data.dev is None:
        raise ConfigError("train.eval_every: in-training evaluation needs data.dev (a BEIR folder); set both")
    evaluated = config.model if config.stage == "warmup" else config.student
    if t.eval_every > 0 and evaluated is not None and evaluated.kind != "de":
        raise ConfigError(
            f"train.eval_every: in-training evaluation retrieves with a dual encoder, and the warm-up model is a "
            f"{evaluated.kind!r}; set train.eval_every=0"
        )


def _validate_speed(config: Config) -> None:
    """`train.speed` (lead_dist/train/speed.py): sizes, and a bf16 teacher only where it can be held in bf16."""
    speed = config.train.speed
    if speed.chunk_size is not None:
        _positive("train.speed.chunk_size", speed.chunk_size, zero_ok=True)
    _positive("train.speed.length_bucket", speed.length_bucket)
    teacher = config.teacher
    if speed.teacher_bf16 and (
        config.stage != "distill" or teacher is None or teacher.trained or config.mode == "contrastive"
    ):
        raise ConfigError(
            "train.speed.teacher_bf16: true needs a frozen teacher (teacher.trained=false) to distil from"
        )
    if speed.teacher_bf16 and config.train.mixed_precision != "bf16":
        raise ConfigError(
            f"train.speed.teacher_bf16: true needs train.mixed_precision=bf16, got {config.train.mixed_precision!r}"
        )
    if speed.teacher_bf16 and teacher is not None and teacher.deepspeed is not None:
        raise ConfigError(
            "train.speed.teacher_bf16: a teacher under DeepSpeed is held in the JSON's precision; leave it null"
        )


def _validate_lead(config: Config) -> None:
    lead = config.lead
    _one_of("lead.strategy", lead.strategy, STRATEGIES)
    _positive("lead.k", lead.k)
    _positive("lead.resample_every", lead.resample_every)
    _positive("lead.temperature", lead.temperature)
    _positive("lead.layer_temperature", lead.layer_temperature)
    if lead.strategy == "fixed":
        if not lead.fixed:
            raise ConfigError("lead.fixed: strategy fixed needs a list of [student_layer, teacher_layer] pairs")
        if any(len(pair) != 2 for pair in lead.fixed):
            raise ConfigError(
                f"lead.fixed: every entry must be a [student_layer, teacher_layer] pair, got {lead.fixed}"
            )
        if len(lead.fixed) != lead.k:
            raise ConfigError(
                f"lead.k: {lead.k} but lead.fixed lists {len(lead.fixed)} pairs; set lead.k={len(lead.fixed)}"
            )
    elif lead.fixed is not None:
        raise ConfigError(f"lead.fixed: only used with lead.strategy=fixed (strategy is {lead.strategy!r})")
    for key in ("student", "teacher", "response", "layers"):
        _positive(f"lead.coef.{key}", getattr(lead.coef, key), zero_ok=True)


def _validate_engines(config: Config, models: dict[str, ModelConfig]) -> None:
    trained = set(config.trained_models)
    under_ds = {name for name, m in models.items() if m.deepspeed is not None}
    # accelerate routes every prepared model through DeepSpeed once one is, so a trained model needs its own JSON.
    if under_ds:
        missing = sorted(trained - under_ds)
        if missing:
            raise ConfigError(
                f"{missing[0]}.deepspeed: {', '.join(sorted(under_ds))} runs under DeepSpeed, so every trained model "
                f"must too; set {missing[0]}.deepspeed (e.g. launch/deepspeed/zero2.json)"
            )
    for name, m in models.items():
        _validate_deepspeed(name, m, config)
        if zero_stage(m) == 3 and name in ("student", "model") and config.train.eval_every > 0:
            raise ConfigError(
                f"train.eval_every: in-training evaluation has each rank encode its own share of the dev corpus "
                f"outside the engine, which a ZeRO-3 partitioned {name} cannot do; set train.eval_every=0 and "
                "evaluate the exported model with `lead-dist evaluate`"
            )
    if config.stage == "distill" and config.teacher is not None and config.teacher.deepspeed is not None:
        if not config.teacher.trained and zero_stage(config.teacher) not in (0, 3):
            raise ConfigError(
                f"teacher.deepspeed: a frozen teacher runs as an inference engine, which shards weights only with "
                f"ZeRO stage 3 (got stage {zero_stage(config.teacher)}); use launch/deepspeed/zero3_inference.json "
                "or drop teacher.deepspeed"
            )


def validate_depths(config: Config, student_depth: int, teacher_depth: int | None) -> None:
    """Checks that need the loaded models: K and fixed layer pairs against each model's depth."""
    if config.stage != "distill" or config.mode != "lead":
        return
    assert teacher_depth is not None, "mode lead always has a teacher"
    lead = config.lead
    for name, depth in (("student", student_depth), ("teacher", teacher_depth)):
        if lead.k > depth:
            raise ConfigError(
                f"lead.k: {lead.k} layers cannot be drawn from the {depth}-layer {name}; set lead.k<={min(student_depth, teacher_depth)}"
            )
    if lead.strategy == "fixed":
        assert lead.fixed is not None
        for s, t in lead.fixed:
            if not (0 <= s < student_depth and 0 <= t < teacher_depth):
                raise ConfigError(
                    f"lead.fixed: pair [{s}, {t}] is out of range; layers are 0..{student_depth - 1} (student) and "
                    f"0..{teacher_depth - 1} (teacher)"
                )
