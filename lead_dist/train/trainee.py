"""How is one model driven? One class per way, each answering the same questions for its model:

    accumulate(boundary)   around one micro-batch: do gradients sync on this one (the accumulation boundary)?
    backward(loss, ...)    back-propagate this model's share of the step's loss (step.py builds it)
    step(scaler)           clip, optimizer step, schedule step, clear; returns the gradient norm before clipping
    save(dir) / load(dir)  its part of a checkpoint (resume.py writes the rest); a frozen model has none
    lr                     the learning rate the next step uses

| class | when | forwards go through | backward, step, checkpoint |
|---|---|---|---|
| `PlainTrainee` | trained, no DeepSpeed JSON | the model, or DDP when several processes run (never `find_unused_parameters`: every parameter takes part in the loss) | `loss / grad_accum` (scaled by the fp16 GradScaler when there is one); `clip_grad_norm_` with the section's `grad_clip`; torch AdamW; `<name>.safetensors` + `<name>-optimizer.pt`, main process |
| `DeepSpeedTrainee` | trained, a DeepSpeed JSON | its DeepSpeed engine (ZeRO stage of the JSON, under the section's own plugin) | `engine.backward` (divides by the accumulation itself), `engine.step` (clips with the JSON's `gradient_clipping` = `grad_clip`); the engine's checkpoint under tag `<name>`, every rank its ZeRO shards |
| `FrozenTrainee` | a frozen teacher | the model, or a DeepSpeed inference engine (partitioned, no optimizer) when it has a JSON | none: no gradient, nothing saved (rebuilt from its config) |
| `FrozenTrainee` fed `CacheRows` (`cached_teacher_trainee`) | `teacher.cache: DIR` | `CachedTeacher` (lead_dist/teacher_cache/read.py): looks the batch's rows up | as frozen; collates ids to cache rows, and its step costs no encoder FLOPs |

Every class also has `model` (the lead_dist model: tokenizers, `score`, `save`, its parameters), `wrapped` (what the
forwards go through; `model` itself when nothing wraps it), `trained`, and `inputs` (`TokenInputs` or a cached
teacher's `CacheRows`: how step.py collates the model's batch and counts its FLOPs). The classes share no base (the
`Trainee` protocol only names the questions); what two of them do alike is an object or a function here.
Both trained classes hold the LR schedule (linear warm-up then linear decay to 0, a LambdaLR stepped after each
optimizer step) and save it as `<name>-schedule.pt`. `prepare_trainees` picks the class of each model of the run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, NoReturn, Protocol

import torch
from torch import nn

from lead_dist.config import AUTO_ZERO_KEYS, Config, ModelConfig
from lead_dist.train.flops import ModelWork, TransformerShape, maxsim_flops, tensor_shape
from lead_dist.train.resume import (
    load_module_weights,
    load_object_state,
    save_module_weights,
    save_object_state,
    weights_only_deepspeed_loading,
)


def engine_label(wrapped: nn.Module) -> str:
    """How run.json names what drives a model: `deepspeed-zero<stage>`, else the wrapper's class name."""
    stage = getattr(wrapped, "zero_optimization_stage", None)
    return f"deepspeed-zero{stage()}" if callable(stage) else type(wrapped).__name__


class ModelInputs(Protocol):
    """What a model is fed and what feeding it costs: `TokenInputs` for an encoder, `CacheRows` for a cached
    teacher."""

    def collate(self, examples: list[dict], lengths: tuple[int, int]) -> dict: ...
    def work(self, inputs: dict, num_layers: int, candidates_per_passage: int) -> tuple[ModelWork, int]: ...


class Trainee(Protocol):
    """What step.py and resume.py ask of every way of driving a model. The classes below answer it each on their
    own (no shared base; what two of them share is an object or a function of this module)."""

    name: str  # "student", "teacher" or "model" (warm-up)
    model: nn.Module
    wrapped: nn.Module
    trained: bool
    inputs: ModelInputs

    @property
    def lr(self) -> float: ...
    def accumulate(self, boundary: bool) -> contextlib.AbstractContextManager: ...
    def backward(self, loss: torch.Tensor, *, grad_accum: int, scaler: torch.amp.GradScaler | None) -> None: ...
    def step(self, scaler: torch.amp.GradScaler | None) -> float: ...
    def save(self, directory: Path, *, is_main: bool) -> None: ...
    def load(self, directory: Path) -> None: ...


class TokenInputs:
    """An encoder's inputs: the examples' tokens, collated on the CPU; its work is the encoder's matmul FLOPs."""

    def __init__(self, model: nn.Module, *, trained: bool) -> None:
        self.model, self.trained = model, trained

    def collate(self, examples: list[dict], lengths: tuple[int, int]) -> dict:
        from lead_dist.data import collate_for

        return collate_for(self.model, examples, *lengths)

    def work(self, inputs: dict, num_layers: int, candidates_per_passage: int) -> tuple[ModelWork, int]:
        """(this model's share of the step's FLOPs, its non-pad tokens) for one collated micro-batch. `num_layers`:
        the layers scored besides the final one; `candidates_per_passage`: ranks whose passages each query meets
        (the world size with global candidates, else 1). See train/flops.py for what is counted."""
        model = self.model
        tokenized = {key: v for key, v in inputs.items() if isinstance(v, dict) and "input_ids" in v}
        tokens = sum(int(t["attention_mask"].sum()) for t in tokenized.values())
        shapes = {key: tensor_shape(t) for key, t in tokenized.items()}
        scoring = 0
        if getattr(model, "kind", None) == "cb":
            final_dim = getattr(model, "projection_dim", None) or int(model.hidden_size)
            dims = (final_dim,) + (int(model.hidden_size),) * num_layers
            scoring = maxsim_flops(shapes["queries"], shapes["passages"], candidates_per_passage, dims)
        return ModelWork(TransformerShape.of_model(model), tuple(shapes.values()), self.trained, scoring), tokens


class CacheRows:
    """A cached teacher's inputs (`CachedTeacher`, lead_dist/teacher_cache/read.py): the examples' ids become cache
    rows; no encoder runs, so no encoder FLOPs and no tokens, but a ColBERT teacher's MaxSim over the cached tokens
    still does."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def collate(self, examples: list[dict], lengths: tuple[int, int]) -> dict:
        return self.model.collate(examples)

    def work(self, inputs: dict, num_layers: int, candidates_per_passage: int) -> tuple[ModelWork, int]:
        scoring = 0
        if self.model.kind == "cb":
            tables = self.model.tables
            q, p = (
                self._shape(tables["query"], inputs["queries"]["query_rows"]),
                self._shape(tables["passage"], inputs["passages"]["passage_rows"]),
            )
            dims = (int(tables["passage"].final.shape[-1]),) + (int(tables["passage"].layers.shape[-1]),) * num_layers
            scoring = maxsim_flops(q, p, candidates_per_passage, dims)
        return ModelWork(None, (), False, scoring), 0

    @staticmethod
    def _shape(table: Any, rows: torch.Tensor) -> tuple[int, int]:
        """(texts, padded token length) of a ColBERT batch as `CachedTeacher` lays it out."""
        return len(rows), int(table.lengths[rows.cpu()].max()) if len(rows) else 0


def _refuse_training(name: str, what: str) -> NoReturn:
    raise RuntimeError(f"the {name} is frozen: it takes no {what}")


class FrozenTrainee:
    """A frozen model: forwards only (through a DeepSpeed inference engine when its section names a JSON), no
    gradient, nothing of it in a checkpoint (it is rebuilt from its config, or read from its verified cache)."""

    trained = False
    lr = 0.0

    def __init__(
        self, name: str, model: nn.Module, wrapped: nn.Module | None = None, *, inputs: ModelInputs | None = None
    ) -> None:
        self.name, self.model = name, model
        self.wrapped = model if wrapped is None else wrapped
        self.inputs = TokenInputs(model, trained=False) if inputs is None else inputs

    def accumulate(self, boundary: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, *, grad_accum: int, scaler: torch.amp.GradScaler | None) -> None:
        _refuse_training(self.name, "backward")

    def step(self, scaler: torch.amp.GradScaler | None) -> float:
        _refuse_training(self.name, "optimizer step")

    def save(self, directory: Path, *, is_main: bool) -> None:
        """Nothing: a frozen model is rebuilt from its config (or its cache)."""

    def load(self, directory: Path) -> None:
        """Nothing: a frozen model is rebuilt from its config (or its cache)."""


def cached_teacher_trainee(name: str, model: nn.Module, wrapped: nn.Module | None = None) -> FrozenTrainee:
    """A frozen teacher read from its cache: frozen, fed cache rows instead of tokens."""
    return FrozenTrainee(name, model, wrapped, inputs=CacheRows(model))


# Both trained classes hold the LR schedule and save it as `<name>-schedule.pt` beside their own state.
def _save_schedule(trainee: PlainTrainee | DeepSpeedTrainee, directory: Path, is_main: bool) -> None:
    if is_main:
        save_object_state(trainee.scheduler, directory / f"{trainee.name}-schedule.pt")


def _load_schedule(trainee: PlainTrainee | DeepSpeedTrainee, directory: Path) -> None:
    load_object_state(trainee.scheduler, directory / f"{trainee.name}-schedule.pt")


class PlainTrainee:
    """A trained model outside DeepSpeed: the module itself, or DDP when several processes run."""

    trained = True

    def __init__(
        self,
        name: str,
        model: nn.Module,
        wrapped: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        grad_clip: float,
    ) -> None:
        self.name, self.model, self.wrapped = name, model, wrapped
        self.optimizer, self.scheduler, self.grad_clip = optimizer, scheduler, grad_clip
        self.inputs = TokenInputs(model, trained=True)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def accumulate(self, boundary: bool) -> contextlib.AbstractContextManager:
        # DDP skips its gradient all-reduce on the inner micro-batches; a bare module has nothing to skip.
        no_sync = getattr(self.wrapped, "no_sync", None)
        return no_sync() if not boundary and no_sync is not None else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, *, grad_accum: int, scaler: torch.amp.GradScaler | None) -> None:
        loss = loss / grad_accum
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def step(self, scaler: torch.amp.GradScaler | None) -> float:
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if scaler is not None:
            scaler.step(self.optimizer)
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return norm

    def save(self, directory: Path, *, is_main: bool) -> None:
        if is_main:
            save_module_weights(self.model, directory / f"{self.name}.safetensors")
            save_object_state(self.optimizer, directory / f"{self.name}-optimizer.pt")
        _save_schedule(self, directory, is_main)

    def load(self, directory: Path) -> None:
        load_module_weights(self.model, directory / f"{self.name}.safetensors")
        load_object_state(self.optimizer, directory / f"{self.name}-optimizer.pt")
        _load_schedule(self, directory)


class DeepSpeedTrainee:
    """A trained model in its DeepSpeed engine (`wrapped`), which wraps this very AdamW object: the schedule keeps
    setting the LR DeepSpeed uses."""

    trained = True

    def __init__(
        self,
        name: str,
        model: nn.Module,
        wrapped: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        self.name, self.model, self.wrapped = name, model, wrapped
        self.optimizer, self.scheduler = optimizer, scheduler
        self.inputs = TokenInputs(model, trained=True)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def accumulate(self, boundary: bool) -> contextlib.AbstractContextManager:
        self.wrapped.set_gradient_accumulation_boundary(boundary)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, *, grad_accum: int, scaler: torch.amp.GradScaler | None) -> None:
        self.wrapped.backward(loss)  # DeepSpeed divides by its gradient_accumulation_steps itself

    def step(self, scaler: torch.amp.GradScaler | None) -> float:
        self.wrapped.step()  # clips with the JSON's gradient_clipping (= this model's grad_clip)
        norm = self.wrapped.get_global_grad_norm()
        self.scheduler.step()
        return float(norm) if norm is not None else float("nan")

    def save(self, directory: Path, *, is_main: bool) -> None:
        # Each rank writes its ZeRO partition (weights, optimizer); DeepSpeed synchronises inside.
        self.wrapped.save_checkpoint(str(directory), tag=self.name, save_latest=False)
        _save_schedule(self, directory, is_main)

    def load(self, directory: Path) -> None:
        weights_only_deepspeed_loading(self.wrapped)  # DeepSpeed's own loader would unpickle anything
        path, _client = self.wrapped.load_checkpoint(
            str(directory), tag=self.name, load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint of the {self.name} (tag {self.name})")
        _load_schedule(self, directory)


# ----------------------------------------------------------------------------------------------------------------
# choosing and building each model's trainee


def make_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights take no weight decay (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates every parameter in one pass (about 5x faster than the per-tensor loop on CPU,
    # measured by benchmarks/throughput); it needs every parameter on one CPU or CUDA device in a float dtype.
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


def _fill_hidden_size_keys(accelerator: Any, hidden_size: int) -> None:
    zero = accelerator.state.deepspeed_plugin.deepspeed_config.setdefault("zero_optimization", {})
    for key, value in AUTO_ZERO_KEYS.items():
        if zero.get(key) == "auto":
            zero[key] = value(hidden_size)


def prepare_trainees(
    accelerator: Any, config: Config, models: dict[str, nn.Module], total_steps: int
) -> dict[str, Trainee]:
    """Each model of the run in the class that drives it (see the module docstring); trained ones get AdamW and
    the linear warm-up schedule."""
    trainees: dict[str, Trainee] = {}
    for name, model in models.items():
        section: ModelConfig = getattr(config, name)
        trained = name in config.trained_models
        model.to(accelerator.device)
        model.train(trained)  # a frozen teacher gives deterministic targets: no dropout
        model.requires_grad_(trained)
        optimizer = make_optimizer(model, section.lr, section.weight_decay) if trained else None
        wrapped = model
        if section.deepspeed is not None:
            accelerator.state.select_deepspeed_plugin(name)
            _fill_hidden_size_keys(accelerator, int(model.hidden_size))
            wrapped = accelerator.prepare(model, optimizer)[0] if trained else accelerator.prepare(model)
        elif trained and accelerator.num_processes > 1:
            wrapped = accelerator.prepare_model(model)  # DDP; accelerate's default keeps find_unused off
        if not trained:
            cached = name == "teacher" and getattr(section, "cache", None) is not None
            trainees[name] = (cached_teacher_trainee if cached else FrozenTrainee)(name, model, wrapped)
            continue
        assert optimizer is not None
        scheduler = linear_warmup_schedule(optimizer, total_steps, config.train.warmup_ratio)
        if section.deepspeed is not None:
            trainees[name] = DeepSpeedTrainee(name, model, wrapped, optimizer, scheduler)
        else:
            trainees[name] = PlainTrainee(name, model, wrapped, optimizer, scheduler, grad_clip=section.grad_clip)
    return trainees
