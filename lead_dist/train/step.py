"""What happens in one step? `run_step` runs one optimizer step of the loop, and benchmarks time the same function.

    micro-batch x grad_accum:  collate (to the device)  ->  forward through the objective (`step_loss`) with every
                               trained model's outputs captured  ->  a non-finite check every rank agrees on  ->
                               backward of each engine  ->  loss terms averaged over ranks, FLOPs and tokens counted
    then:                      the optimizer step of every trained model (clip, step, schedule), skipped when the only
                               micro-batch was not finite (what the loop then does about it: nonfinite.py)

Why the backward goes through captured outputs: LEAD's loss joins two models that may live in two DeepSpeed engines
(each with its own ZeRO stage, clipping and optimizer). A DeepSpeed engine must run the backward of its own model
itself (`engine.backward`, which scales, reduces and partitions gradients); one `loss.backward()` would bypass the
second engine. So the forward hands the loss detached copies ("leaves") of every output of a trained model; the
loss's gradient is taken with respect to those leaves (this runs the cross-rank gather's backward, on every rank),
and each engine then back-propagates `sum(output * grad)` through its own model. The parameter gradients are exactly
those of `loss.backward()`. Plain modules and DDP take the same path, so every engine type runs the same maths.

How each model accumulates, back-propagates and steps is its trainee's answer (train/trainee.py: DDP skips the
all-reduce on inner micro-steps, DeepSpeed is told where the boundary is); this file asks, never which kind it
is. A bad loss without accumulation skips the backward (no gradient, no step); with
accumulation every micro-batch still runs its backward, with zero gradient, so the engines stay in step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lead_dist.config import Config
from lead_dist.train.chunking import Chunking
from lead_dist.train.setup import use_deepspeed
from lead_dist.train.speed import Speed, resolve
from lead_dist.train.trainee import Trainee


@dataclasses.dataclass
class StepResult:
    """What one optimizer step did on this rank (everything the loop logs and the benchmarks report)."""

    losses: dict[str, float]  # each scalar loss term, averaged over ranks and micro-batches ("total" included)
    layer_weights: Any  # LEAD's per-pair weights of the last micro-batch (None without layers)
    learning_rates: dict[str, float]  # of each trained model, as this step used them
    grad_norms: dict[str, float]  # before clipping; empty when the step was skipped
    nonfinite_micro_batches: int  # micro-batches whose loss was not finite on some rank
    skipped: bool  # no optimizer step: the only micro-batch was not finite
    flops: int  # this rank's matmul FLOPs of the step (train/flops.py)
    tokens: int  # this rank's non-pad tokens over every model
    seconds: dict[str, float]  # host wall time of each phase, summed over micro-batches (see `run_step`)


class PhaseClock:
    """Host wall time per phase of a step: `lap(phase)` adds the time since the previous lap (or since the clock was
    made) to that phase."""

    def __init__(self, phases: tuple[str, ...]) -> None:
        self.seconds = dict.fromkeys(phases, 0.0)
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] += now - self._last
        self._last = now


def run_step(
    config: Config,
    trainees: dict[str, Trainee],
    micro_batches: Iterator[dict],
    layers: tuple,
    *,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    poison: bool | str = False,
    speed: Speed | None = None,
) -> StepResult:
    """One optimizer step over `train.grad_accum` collated micro-batches drawn from `micro_batches`.

    `layers`: this step's (student, teacher) layer pairs, ((), ()) when the mode draws none. `poison` (a
    fault-injection hook of the tests) makes the loss NaN (True), or every output of the named model ("teacher"), so
    the loss terms it feeds go NaN as they would from a bad teacher. `seconds` has the phases "collate_s" (drawing the micro-batch),
    "forward_and_loss_s" (through the finite check), "backward_s", "bookkeeping_s" (loss terms averaged over ranks,
    FLOPs and tokens counted) and "optimizer_s": host wall time, so on a GPU without synchronisation it is launch time.
    `speed`: the run's resolved `train.speed` (`Run.speed`); None resolves it for `device` here, once per step.
    """
    chunking = (speed if speed is not None else resolve(config, device)).chunking
    candidates_per_passage = _world() if config.candidates == "global" else 1
    grad_accum = config.train.grad_accum
    losses: dict[str, float] = {}
    clock = PhaseClock(("collate_s", "forward_and_loss_s", "backward_s", "bookkeeping_s", "optimizer_s"))
    lap = clock.lap
    layer_weights = None
    nonfinite = flops = tokens = 0
    for micro in range(grad_accum):
        batch = next(micro_batches)
        lap("collate_s")
        with micro_step(trainees, boundary=micro == grad_accum - 1):
            with capture_outputs(trainees) as captured, autocast(config, device), poisoned(trainees, poison):
                total, terms = step_loss(config, trainees, batch, layers, chunking=chunking)
            if poison is True:
                total = total * float("nan")
            finite = all_ranks_finite(total)  # the same answer on every rank
            nonfinite += 0 if finite else 1
            lap("forward_and_loss_s")
            if finite or grad_accum > 1:
                backward(trainees, total, captured, finite=finite, grad_accum=grad_accum, scaler=scaler)
        lap("backward_s")
        for key, value in mean_over_ranks({"total": total, **terms}).items():
            losses[key] = losses.get(key, 0.0) + value / grad_accum
        layer_weights = terms.get("layer_weights", layer_weights)
        micro_flops, micro_tokens = step_work(trainees, batch, config.stage == "warmup", layers, candidates_per_passage)
        flops, tokens = flops + micro_flops, tokens + micro_tokens
        lap("bookkeeping_s")

    learning_rates = {name: t.lr for name, t in trainees.items() if t.trained}  # what this step used
    skipped = nonfinite == grad_accum == 1
    grad_norms = {} if skipped else optimizer_step(trainees, scaler)
    lap("optimizer_s")
    return StepResult(
        losses, layer_weights, learning_rates, grad_norms, nonfinite, skipped, flops, tokens, clock.seconds
    )


# ----------------------------------------------------------------------------------------------------------------
# the pieces of a step


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def collate(config: Config, trainees: dict[str, Trainee], examples: list[dict], device: torch.device) -> dict:
    lengths = (config.data.query_max_length, config.data.passage_max_length)
    if config.stage == "warmup":
        batch = trainees["model"].inputs.collate(examples, lengths)
        return _to_device(batch, device) | {"group_size": 1 + config.data.num_negatives}
    return {name: _to_device(t.inputs.collate(examples, lengths), device) for name, t in trainees.items()}


def step_loss(
    config: Config, trainees: dict[str, Trainee], batch: dict, layers: tuple, chunking: Chunking | None = None
) -> tuple[torch.Tensor, dict]:
    """The loss of one micro-batch as the loop computes it (warm-up or distillation); benchmarks time this too.
    `chunking`: the length-sorted chunks of `train.speed` (train/chunking.py); None resolves them for the device
    the first model is on."""
    from lead_dist.train.objective import distill_loss, warmup_loss

    if chunking is None:
        chunking = resolve(config, next(iter(trainees.values())).model.backbone.device).chunking
    if config.stage == "warmup":
        return warmup_loss(trainees["model"].wrapped, batch, config.candidates, chunking=chunking)
    teacher = trainees.get("teacher")
    return distill_loss(
        trainees["student"].wrapped,
        teacher.wrapped if teacher is not None and config.mode != "contrastive" else None,
        batch,
        layers[0],
        layers[1],
        config.lead,
        teacher_trained=teacher is not None and teacher.trained,
        candidates=config.candidates,
        mode=config.mode or "lead",
        chunking=chunking,
    )


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_ranks_finite(total: torch.Tensor) -> bool:
    """True only when the loss is finite on EVERY rank, so all ranks take the same branch (no collective hangs)."""
    bad = torch.tensor([0.0 if torch.isfinite(total.detach()).all() else 1.0], device=total.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bool(bad.item() == 0.0)


def mean_over_ranks(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar loss terms averaged over ranks (one small collective), for logging."""
    from lead_dist.distributed import all_reduce_mean

    scalars = {k: v.detach().float() for k, v in terms.items() if isinstance(v, torch.Tensor) and v.dim() == 0}
    if not scalars:
        return {}
    stacked = all_reduce_mean(torch.stack(list(scalars.values())))
    return {k: float(v) for k, v in zip(scalars, stacked.tolist(), strict=True)}


def step_work(
    trainees: dict[str, Trainee], batch: dict, warmup: bool, layers: tuple = ((), ()), candidates_per_passage: int = 1
) -> tuple[int, int]:
    """(FLOPs, non-pad tokens) this rank spent on the step's encoders and ColBERT scores (see train/flops.py).
    `layers`: the step's (student, teacher) layer pairs (a ColBERT scores each); `candidates_per_passage`: the
    world size with global candidates, else 1."""
    from lead_dist.train.flops import step_flops

    works, tokens = [], 0
    for name, trainee in trainees.items():
        num_layers = len(layers[0] if name == "student" else layers[1] if name == "teacher" else ())
        work, counted = trainee.inputs.work(batch if warmup else batch[name], num_layers, candidates_per_passage)
        works.append(work)
        tokens += counted
    return step_flops(works), tokens


def _map_tensors(value: Any, change: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`value` (a model's output: a tensor, a dataclass such as Reps, tuples, lists, dicts) with every tensor
    replaced by `change(tensor)`."""
    if isinstance(value, torch.Tensor):
        return change(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _map_tensors(getattr(value, f.name), change) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple):
        return type(value)(_map_tensors(v, change) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, change) for k, v in value.items()}
    return value


def _replace_tensors(value: Any, leaves: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """Swap every tensor that carries gradient for a detached leaf, recording (original, leaf)."""

    def swap(tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.requires_grad:
            return tensor
        leaf = tensor.detach().requires_grad_(True)
        leaves.append((tensor, leaf))
        return leaf

    return _map_tensors(value, swap)


@contextlib.contextmanager
def poisoned(trainees: dict[str, Trainee], poison: bool | str) -> Iterator[None]:
    """Test hook: while active, every floating-point output of the model named by `poison` is NaN."""
    if not isinstance(poison, str):
        yield
        return

    def nan(_module: nn.Module, _args: Any, output: Any) -> Any:
        return _map_tensors(output, lambda t: t * float("nan") if t.is_floating_point() else t)

    handle = trainees[poison].model.register_forward_hook(nan)
    try:
        yield
    finally:
        handle.remove()


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

        handles.append(trainee.model.register_forward_hook(hook))
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
            if trainee.trained:
                stack.enter_context(trainee.accumulate(boundary))
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
        trainee.backward(torch.stack([t.float() for t in terms]).sum(), grad_accum=grad_accum, scaler=scaler)


def optimizer_step(trainees: dict[str, Trainee], scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """Clip (per model), step, advance the schedule, clear gradients. Returns each model's gradient norm."""
    norms = {name: trainee.step(scaler) for name, trainee in trainees.items() if trainee.trained}
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
