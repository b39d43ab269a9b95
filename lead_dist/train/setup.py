"""How is the run set up? The accelerator, each model's engine, optimizer and LR schedule, the step count, the models
themselves, the layer schedule and the data stream: `set_up(config) -> Run`, everything the loop needs before its
first step (resuming from a checkpoint is `resume.restore`'s job).

One `Trainee` per model of the run (the student and the teacher, or the warm-up model), of the class that drives
it (plain, DeepSpeed, frozen, cached teacher: train/trainee.py, which also holds AdamW and the LR schedule).

- The accelerator: no DeepSpeed JSON: plain torch, bf16/fp16 autocast (fp16 with a GradScaler shared by the
  models, unscaled once per step). A DeepSpeed JSON per model: `Accelerator(deepspeed_plugins={"student": ..,
  "teacher": ..})`, each model prepared under its own plugin (`select_deepspeed_plugin`), so the student can run
  ZeRO-2 and the teacher ZeRO-3. The JSON's batch size, accumulation and clipping are filled from the run config.
- The models are built here from their config sections (`lead_dist.models.from_config`), a cached teacher opened.
- Gradient accumulation adds no negatives: each micro-batch's queries compete only with that micro-batch's
  passages, so `set_up` warns about it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead_dist.config import Config, ModelConfig, deepspeed_json, validate_depths
from lead_dist.train.trainee import Trainee, engine_label, prepare_trainees

RUN_FILE = "run.json"


def use_deepspeed(config: Config) -> bool:
    return any(m is not None and m.deepspeed is not None for m in (config.student, config.teacher, config.model))


def build_accelerator(config: Config) -> Any:
    """The Accelerator of the run: process group (gloo on CPU, NCCL on GPUs) with `rank_timeout_s` as its timeout,
    and one DeepSpeed plugin per model section that names a JSON."""
    from accelerate import Accelerator, DeepSpeedPlugin
    from accelerate.utils import InitProcessGroupKwargs

    # A collective waiting on a dead or stuck rank fails after this long instead of hanging.
    timeout = datetime.timedelta(seconds=config.train.rank_timeout_s)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # A bare `python -m lead_dist.cli train` (no launcher, no WORLD_SIZE) runs without any process group.
    launched = "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ
    handlers = [InitProcessGroupKwargs(backend=backend, timeout=timeout)] if launched else []
    if not use_deepspeed(config):
        # Mixed precision is handled here (autocast + our own GradScaler), not by accelerate's model wrapping.
        # cpu=True on a machine without GPUs makes torchrun launches join one gloo group (accelerate's CPU mode).
        return Accelerator(
            cpu=not torch.cuda.is_available(),
            kwargs_handlers=handlers,
            mixed_precision="no",
            step_scheduler_with_optimizer=False,
        )
    plugins = {}
    for name in ("student", "teacher", "model"):
        section: ModelConfig | None = getattr(config, name)
        if section is not None and section.deepspeed is not None:
            plugins[name] = DeepSpeedPlugin(hf_ds_config=deepspeed_plugin_config(section, config))
    return Accelerator(
        kwargs_handlers=handlers,
        deepspeed_plugins=plugins,
        mixed_precision=config.train.mixed_precision,
        step_scheduler_with_optimizer=False,
    )


def deepspeed_plugin_config(section: ModelConfig, config: Config) -> dict[str, Any]:
    """The section's DeepSpeed JSON with the run's batch size, accumulation and clipping filled in."""
    ds = copy.deepcopy(deepspeed_json(section)) or {}
    ds = {key: value for key, value in ds.items() if not key.startswith("_")}  # "_command", "_about": comments
    ds["train_micro_batch_size_per_gpu"] = config.train.batch_size
    ds["gradient_accumulation_steps"] = config.train.grad_accum
    ds["gradient_clipping"] = section.grad_clip
    ds.setdefault("train_batch_size", "auto")
    ds.setdefault("steps_per_print", 10**9)  # our logger reports; keep DeepSpeed's own progress lines out
    ds.setdefault("zero_optimization", {"stage": 0})
    return ds


def make_grad_scaler(config: Config, device: torch.device) -> torch.amp.GradScaler | None:
    if config.train.mixed_precision != "fp16" or use_deepspeed(config):
        return None
    return torch.amp.GradScaler(device.type)


def total_steps_for(config: Config, batches_per_epoch: int) -> int:
    """Optimizer steps of the run: `max_steps`, capped by `num_epochs` passes when that is set."""
    if config.train.num_epochs is None:
        return config.train.max_steps
    per_epoch = batches_per_epoch // config.train.grad_accum
    if per_epoch < 1:
        raise ValueError(
            f"data.train: {batches_per_epoch} batches per epoch per rank is less than train.grad_accum="
            f"{config.train.grad_accum}; use more data, a smaller train.batch_size or fewer processes"
        )
    return min(config.train.max_steps, math.ceil(config.train.num_epochs * per_epoch))


# ----------------------------------------------------------------------------------------------------------------
# the models


def build_models(config: Config) -> dict[str, torch.nn.Module]:
    """The run's models, before any engine wraps them: {"model"} for warm-up, {"student", "teacher"?} to distil.

    Seeded with `config.seed` first, so fresh weights are the same on every rank, in every launch and for anyone
    who rebuilds them (the demo's "before training" student). With `teacher.cache` the teacher is a
    `CachedTeacher` (no weights); the real one is loaded only to cut a `from_teacher_layers` student, then freed.
    """
    from lead_dist.models import student_from_teacher
    from lead_dist.models.from_config import build_model, build_teacher

    torch.manual_seed(config.seed)
    if config.stage == "warmup":
        assert config.model is not None
        return {"model": build_model(config.model)}
    assert config.student is not None
    models: dict[str, torch.nn.Module] = {}
    cached = config.teacher is not None and config.teacher.cache is not None
    if config.teacher is not None:
        if cached:
            from lead_dist.teacher_cache.read import CachedTeacher

            models["teacher"] = CachedTeacher.open(config)
        else:
            models["teacher"] = build_teacher(config)
    if config.student.from_teacher_layers is not None:
        teacher = build_teacher(config) if cached else models["teacher"]
        if config.student.from_teacher_layers > teacher.num_layers:
            raise ValueError(
                f"student.from_teacher_layers: {config.student.from_teacher_layers} exceeds the teacher's "
                f"{teacher.num_layers} layers"
            )
        student = student_from_teacher(
            teacher, config.student.from_teacher_layers, kind="de", **config.student.model_options()
        )
        del teacher
    else:
        student = build_model(config.student)
    return {"student": student, **models}


def layer_schedule(config: Config, models: dict[str, nn.Module]) -> Any:
    """The LEAD layer-pair schedule (a pure function of seed and step), or None when the mode draws no layers."""
    from lead_dist.lead import LayerSchedule

    if config.stage == "warmup" or config.mode != "lead":
        return None
    depths = (models["student"].num_layers, models["teacher"].num_layers)
    validate_depths(config, *depths)
    fixed = tuple(tuple(pair) for pair in config.lead.fixed) if config.lead.fixed else None
    return LayerSchedule(config.lead.strategy, *depths, config.lead.k, config.seed, config.lead.resample_every, fixed)


# ----------------------------------------------------------------------------------------------------------------
# the whole set-up


@dataclasses.dataclass
class Run:
    """What `set_up` builds for one run, on this rank."""

    config: Config
    accelerator: Any
    trainees: dict[str, Trainee]
    stream: Any  # lead_dist.data.stream.TrainStream: this rank's batches, with a resumable cursor
    schedule: Any  # lead_dist.lead.LayerSchedule for mode lead, else None
    scaler: torch.amp.GradScaler | None
    total_steps: int
    peak_flops: float | None  # the matmul peak MFU is logged against (main process only)
    speed: Any = None  # train/speed.py: the resolved `train.speed` switches
    compiler: Any = None  # train/speed.py's CompileCounter when blocks are compiled (the loop logs its count)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def out(self) -> Path:
        return Path(self.config.output_dir)

    def layers_at(self, step: int) -> tuple:
        """The (student, teacher) layer pairs of `step`; empty for modes that request no layers."""
        return self.schedule.at(step) if self.schedule is not None else ((), ())


def set_up(config: Config, accelerator: Any = None) -> Run:
    """Accelerator (unless given: the loop builds it first to claim output_dir), models, layer schedule, data stream,
    step count, engines and the MFU peak, in this order.

    The order matters for the random numbers: the models are built from `config.seed` on every rank, and the MFU
    peak is measured (it draws random matrices) before `resume.restore` seeds or restores the RNGs.
    """
    from lead_dist.data.stream import TrainStream
    from lead_dist.train.flops import peak_matmul_flops
    from lead_dist.train.speed import apply_to_models as apply_speed
    from lead_dist.train.speed import resolve as resolve_speed

    accelerator = build_accelerator(config) if accelerator is None else accelerator
    if accelerator.is_main_process:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    if config.train.grad_accum > 1:
        warnings.warn(
            f"train.grad_accum={config.train.grad_accum}: accumulation adds no negatives; each micro-batch's queries "
            "compete only with that micro-batch's passages. Raise train.batch_size or the number of processes for "
            "more negatives.",
            stacklevel=3,  # the caller of loop.train
        )
    models = build_models(config)  # seeded: identical initial weights on every rank, whatever the launch
    speed = resolve_speed(config, accelerator.device)
    compiler = apply_speed(config, models, speed)  # bf16 frozen teacher, compiled blocks
    schedule = layer_schedule(config, models)
    stream = TrainStream(
        config.data.train,
        batch_size=config.train.batch_size,
        num_negatives=config.data.num_negatives,
        seed=config.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        num_workers=config.data.num_workers,
        manifest=config.data.manifest,
        retries=config.data.retries,
        retry_backoff_s=config.data.retry_backoff_s,
        on_bad_shard=config.data.on_bad_shard,
    )
    total_steps = total_steps_for(config, stream.batches_per_epoch)
    trainees = prepare_trainees(accelerator, config, models, total_steps)
    scaler = make_grad_scaler(config, accelerator.device)
    peak_dtype = torch.bfloat16 if config.train.mixed_precision == "bf16" else torch.float32
    peak = peak_matmul_flops(peak_dtype) if accelerator.is_main_process else None
    return Run(config, accelerator, trainees, stream, schedule, scaler, total_steps, peak, speed, compiler)


def write_run_file(run: Run, **extra: Any) -> None:
    """`output_dir/run.json`: what ran where (world size, machines, engines) and the full resolved config."""
    record = {
        "world_size": run.world,
        "num_machines": int(os.environ.get("GROUP_WORLD_SIZE", os.environ.get("NNODES", "1")) or 1),
        "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        "engines": {name: engine_label(trainee.wrapped) for name, trainee in run.trainees.items()},
        "trained": [name for name, t in run.trainees.items() if t.trained],
        "config": dataclasses.asdict(run.config),
        **extra,
    }
    path = run.out / RUN_FILE
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
