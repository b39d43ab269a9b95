"""How each model is driven: plain module, DDP or a DeepSpeed ZeRO engine, with its optimizer and LR schedule.

One `Trainee` per model of the run (the student and the teacher, or the warm-up model). The loop sees four verbs:
`capture_outputs` (around the forward), `backward`, `optimizer_step` and `skip_step`; this module hides which
engine sits underneath.

Why the backward goes through captured outputs: LEAD's loss joins two models that may live in two DeepSpeed engines
(each with its own ZeRO stage, clipping and optimizer). A DeepSpeed engine must run the backward of its own model
itself (`engine.backward`, which scales, reduces and partitions gradients); one `loss.backward()` would bypass the
second engine. So the forward hands the loss detached copies ("leaves") of every output of a trained model; the
loss's gradient is taken with respect to those leaves (this runs the cross-rank gather's backward, on every rank),
and each engine then back-propagates `sum(output * grad)` through its own model. The parameter gradients are exactly
those of `loss.backward()`. Plain modules and DDP take the same path, so every engine type runs the same maths.

Engines:
- no DeepSpeed JSON: DDP when several processes run (never `find_unused_parameters`: every parameter of our models
  takes part in the loss), the bare module on one process; torch AdamW; clipping per model with
  `clip_grad_norm_`; bf16/fp16 autocast (fp16 with a GradScaler shared by the models, unscaled once per step).
- a DeepSpeed JSON per model: `Accelerator(deepspeed_plugins={"student": .., "teacher": ..})`, each model prepared
  under its own plugin (`select_deepspeed_plugin`), so the student can run ZeRO-2 and the teacher ZeRO-3. The JSON's
  batch size, accumulation and clipping are filled from the run config. A frozen teacher with a JSON becomes a
  partitioned inference engine (no optimizer).
- Gradient accumulation: DDP skips the all-reduce on inner micro-steps (`no_sync`), DeepSpeed is told where the
  boundary is. Accumulation adds no negatives: each micro-batch's queries compete only with that micro-batch's
  passages (the loop warns about it).
The LR schedule (linear warm-up then linear decay to 0) is a LambdaLR stepped by the loop after each optimizer step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead_dist.config import AUTO_ZERO_KEYS, Config, ModelConfig, deepspeed_json


@dataclasses.dataclass
class Trainee:
    """One model as the loop drives it."""

    name: str  # "student", "teacher" or "model"
    model: nn.Module  # what forwards go through: DDP, a DeepSpeed engine or the module itself
    raw: nn.Module  # the lead_dist model inside (tokenizers, `score`, `save`)
    trained: bool
    grad_clip: float
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    engine: Any = None  # the DeepSpeedEngine, when under DeepSpeed

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0


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


def _fill_hidden_size_keys(accelerator: Any, hidden_size: int) -> None:
    zero = accelerator.state.deepspeed_plugin.deepspeed_config.setdefault("zero_optimization", {})
    for key, value in AUTO_ZERO_KEYS.items():
        if zero.get(key) == "auto":
            zero[key] = value(hidden_size)


def make_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights take no weight decay (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates every parameter in one pass (about 5x faster than the per-tensor loop on CPU,
    # measured in benchmarks/throughput.py); it needs every parameter on one CPU or CUDA device in a float dtype.
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused)


def linear_warmup_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """LR factor (s+1)/W during the W = round(ratio * total) warm-up steps, then linear decay to 0 at `total`.

    Step 0 already trains (factor 1/W, not 0), so no optimizer step is wasted at learning rate zero.
    """
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def prepare_trainees(
    accelerator: Any, config: Config, models: dict[str, nn.Module], total_steps: int
) -> dict[str, Trainee]:
    """Wrap every model of the run in its engine; trained ones get AdamW and the linear warm-up schedule."""
    trained_names = set(config.trained_models)
    trainees: dict[str, Trainee] = {}
    for name, raw in models.items():
        section: ModelConfig = getattr(config, name)
        trained = name in trained_names
        raw.to(accelerator.device)
        raw.train(trained)  # a frozen teacher gives deterministic targets: no dropout
        raw.requires_grad_(trained)
        trainee = Trainee(name=name, model=raw, raw=raw, trained=trained, grad_clip=section.grad_clip)
        if trained:
            trainee.optimizer = make_optimizer(raw, section.lr, section.weight_decay)
        if section.deepspeed is not None:
            accelerator.state.select_deepspeed_plugin(name)
            _fill_hidden_size_keys(accelerator, int(raw.hidden_size))
            if trained:
                # ZeRO wraps this very AdamW object, so the schedule below keeps setting the LR DeepSpeed uses.
                trainee.model, _wrapped_optimizer = accelerator.prepare(raw, trainee.optimizer)
            else:
                trainee.model = accelerator.prepare(raw)
            trainee.engine = trainee.model
        elif trained and accelerator.num_processes > 1:
            trainee.model = accelerator.prepare_model(raw)  # DDP; accelerate's default keeps find_unused off
        if trained:
            assert trainee.optimizer is not None
            trainee.scheduler = linear_warmup_schedule(trainee.optimizer, total_steps, config.train.warmup_ratio)
        trainees[name] = trainee
    return trainees


# ----------------------------------------------------------------------------------------------------------------
# forward / backward / step


def _replace_tensors(value: Any, leaves: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """Swap every tensor that carries gradient for a detached leaf, recording (original, leaf)."""
    if isinstance(value, torch.Tensor):
        if not value.requires_grad:
            return value
        leaf = value.detach().requires_grad_(True)
        leaves.append((value, leaf))
        return leaf
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _replace_tensors(getattr(value, f.name), leaves) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple):
        return type(value)(_replace_tensors(v, leaves) for v in value)
    if isinstance(value, list):
        return [_replace_tensors(v, leaves) for v in value]
    if isinstance(value, dict):
        return {k: _replace_tensors(v, leaves) for k, v in value.items()}
    return value


class CapturedOutputs:
    """The (output, leaf) pairs each trained model produced during one forward of the objective."""

    def __init__(self, trainees: list[Trainee]) -> None:
        self.by_model: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {t.name: [] for t in trainees}


@contextlib.contextmanager
def capture_outputs(trainees: dict[str, Trainee]) -> Iterator[CapturedOutputs]:
    """Around the objective's forward: every output of a trained model reaches the loss as a detached leaf."""
    trained = [t for t in trainees.values() if t.trained]
    captured = CapturedOutputs(trained)
    handles = []
    for trainee in trained:

        def hook(_module: nn.Module, _args: Any, output: Any, name: str = trainee.name) -> Any:
            return _replace_tensors(output, captured.by_model[name])

        handles.append(trainee.raw.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def micro_step(trainees: dict[str, Trainee], boundary: bool) -> Iterator[None]:
    """Around one micro-batch's forward and backward: gradients sync only on the accumulation boundary."""
    with contextlib.ExitStack() as stack:
        for trainee in trainees.values():
            if not trainee.trained:
                continue
            if trainee.engine is not None:
                trainee.engine.set_gradient_accumulation_boundary(boundary)
            elif not boundary and hasattr(trainee.model, "no_sync"):
                stack.enter_context(trainee.model.no_sync())
        yield


def backward(
    trainees: dict[str, Trainee],
    total: torch.Tensor,
    captured: CapturedOutputs,
    *,
    finite: bool,
    grad_accum: int,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Back-propagate `total` into every trained model through its own engine (see the module docstring).

    When the step's loss is not finite (`finite` False, decided alike on every rank) the models receive zero output
    gradients: every engine still runs its backward, so collectives and accumulation boundaries stay aligned.
    """
    pairs = [(name, out, leaf) for name, outs in captured.by_model.items() for out, leaf in outs]
    leaves = [leaf for _name, _out, leaf in pairs]
    grads: list[torch.Tensor | None] = [None] * len(leaves)
    if finite and leaves:
        grads = list(torch.autograd.grad(total, leaves, allow_unused=True))
    for trainee in trainees.values():
        if not trainee.trained:
            continue
        terms = [
            (out * grad).sum() if grad is not None else (out * 0).sum()
            for (name, out, _leaf), grad in zip(pairs, grads, strict=True)
            if name == trainee.name
        ]
        if not terms:
            raise RuntimeError(f"the {trainee.name} produced no output with gradient in this step's loss")
        surrogate = torch.stack([t.float() for t in terms]).sum()
        if trainee.engine is not None:
            trainee.engine.backward(surrogate)  # DeepSpeed divides by its gradient_accumulation_steps itself
        else:
            surrogate = surrogate / grad_accum
            (scaler.scale(surrogate) if scaler is not None else surrogate).backward()


def optimizer_step(trainees: dict[str, Trainee], scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """Clip (per model), step, advance the schedule, clear gradients. Returns each model's gradient norm."""
    norms: dict[str, float] = {}
    for trainee in trainees.values():
        if not trainee.trained:
            continue
        if trainee.engine is not None:
            trainee.engine.step()  # clips with the JSON's gradient_clipping (= this model's grad_clip)
            norm = trainee.engine.get_global_grad_norm()
            norms[trainee.name] = float(norm) if norm is not None else float("nan")
        else:
            assert trainee.optimizer is not None
            if scaler is not None:
                scaler.unscale_(trainee.optimizer)
            params = [p for p in trainee.raw.parameters() if p.grad is not None]
            max_norm = trainee.grad_clip if trainee.grad_clip > 0 else float("inf")
            norms[trainee.name] = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if scaler is not None:
                scaler.step(trainee.optimizer)
            else:
                trainee.optimizer.step()
            trainee.optimizer.zero_grad(set_to_none=True)
        assert trainee.scheduler is not None
        trainee.scheduler.step()
    if scaler is not None:
        scaler.update()  # once per step, after every optimizer (torch's recipe for several optimizers)
    return norms


def autocast(config: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast for modules outside DeepSpeed (DeepSpeed casts its model to the precision itself)."""
    precision = config.train.mixed_precision
    if precision == "no" or use_deepspeed(config):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(config: Config, device: torch.device) -> torch.amp.GradScaler | None:
    if config.train.mixed_precision != "fp16" or use_deepspeed(config):
        return None
    return torch.amp.GradScaler(device.type)


# ----------------------------------------------------------------------------------------------------------------
# checkpoint contents of the engines (the atomic directory, RNG and train state live in train/checkpoint.py)


def save_trainees(trainees: dict[str, Trainee], directory: Path, *, is_main: bool, scaler: Any = None) -> None:
    """Write every trained model's weights, optimizer and schedule into `directory` (call on EVERY rank)."""
    from lead_dist.train.checkpoint_contents import save_module_weights, save_object_state

    for trainee in trainees.values():
        if not trainee.trained:
            continue
        if trainee.engine is not None:
            # Each rank writes its ZeRO partition (weights, optimizer); DeepSpeed synchronises inside.
            trainee.engine.save_checkpoint(str(directory), tag=trainee.name, save_latest=False)
        elif is_main:
            save_module_weights(trainee.raw, directory / f"{trainee.name}.safetensors")
            save_object_state(trainee.optimizer, directory / f"{trainee.name}-optimizer.pt")
        if is_main:
            save_object_state(trainee.scheduler, directory / f"{trainee.name}-schedule.pt")
    if scaler is not None and is_main:
        save_object_state(scaler, directory / "grad-scaler.pt")


def load_trainees(trainees: dict[str, Trainee], directory: Path, scaler: Any = None) -> None:
    """Inverse of `save_trainees`, on every rank."""
    from lead_dist.train.checkpoint_contents import (
        load_module_weights,
        load_object_state,
        weights_only_deepspeed_loading,
    )

    for trainee in trainees.values():
        if not trainee.trained:
            continue
        if trainee.engine is not None:
            weights_only_deepspeed_loading(trainee.engine)  # DeepSpeed's own loader would unpickle anything
            path, _client = trainee.engine.load_checkpoint(
                str(directory), tag=trainee.name, load_optimizer_states=True, load_lr_scheduler_states=False
            )
            if path is None:
                raise FileNotFoundError(
                    f"{directory}: no DeepSpeed checkpoint of the {trainee.name} (tag {trainee.name})"
                )
        else:
            load_module_weights(trainee.raw, directory / f"{trainee.name}.safetensors")
            load_object_state(trainee.optimizer, directory / f"{trainee.name}-optimizer.pt")
        load_object_state(trainee.scheduler, directory / f"{trainee.name}-schedule.pt")
    if scaler is not None:
        load_object_state(scaler, directory / "grad-scaler.pt")


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
