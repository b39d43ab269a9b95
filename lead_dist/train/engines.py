"""How each model's forward, backward and optimizer step go through its engine (plain module, DDP or DeepSpeed).

The loop sees four verbs: `capture_outputs` (around the forward), `backward`, `optimizer_step` and `micro_step`;
this module hides which engine sits underneath (`setup.py` chooses and builds the engines).

Why the backward goes through captured outputs: LEAD's loss joins two models that may live in two DeepSpeed engines
(each with its own ZeRO stage, clipping and optimizer). A DeepSpeed engine must run the backward of its own model
itself (`engine.backward`, which scales, reduces and partitions gradients); one `loss.backward()` would bypass the
second engine. So the forward hands the loss detached copies ("leaves") of every output of a trained model; the
loss's gradient is taken with respect to those leaves (this runs the cross-rank gather's backward, on every rank),
and each engine then back-propagates `sum(output * grad)` through its own model. The parameter gradients are exactly
those of `loss.backward()`. Plain modules and DDP take the same path, so every engine type runs the same maths.

Gradient accumulation: DDP skips the all-reduce on inner micro-steps (`no_sync`), DeepSpeed is told where the
boundary is.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead_dist.config import Config
from lead_dist.train.setup import Trainee, use_deepspeed

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
