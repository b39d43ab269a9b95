"""The cells every step benchmark times (throughput, gpu, quality's step costs): model sizes, and one step of the
real trainer per cell.

A `Variant` is one cell of the grid (size x dtype x mode x teacher x frozen/joint). Its `step()` is the training
loop's own step, `lead_dist.train.step.run_step`, on a batch collated once before timing (an endless repeat of it),
so the numbers are the models' step, not the tokenizer's (benchmarks/data measures collation and streaming).

Models are built once per size and shared by the variants (one AdamW per trained model), so the process holds a
size's models once, not once per variant; before each step the variant sets train mode and `requires_grad` the way
`setup.prepare_trainees` does for its own frozen/joint choice.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any

import torch

from benchmarks.harness.fixtures import MINILM_HUB_ID
from lead_dist.config import KINDS as TEACHER_KINDS
from lead_dist.config import Config, config_from_dict
from lead_dist.train import setup, step
from lead_dist.train.trainee import FrozenTrainee, PlainTrainee, Trainee, linear_warmup_schedule, make_optimizer


@dataclasses.dataclass(frozen=True)
class SizeSpec:
    """One model size of the grid, with the batch it trains on (queries per step, 1 positive + negatives each)."""

    name: str
    student_config: dict[str, Any] | None  # BertConfig kwargs; None = the real all-MiniLM-L6-v2
    teacher_config: dict[str, Any]  # BertConfig kwargs (random weights: throughput does not depend on them)
    batch_size: int
    num_negatives: int
    query_max_length: int
    passage_max_length: int
    lead_k: int


TINY_BERT = {"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256, "max_position_embeddings": 512}
MINILM_SHAPE = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}

SIZES = {
    "tiny": SizeSpec(
        "tiny", TINY_BERT | {"num_hidden_layers": 2}, TINY_BERT | {"num_hidden_layers": 4}, 8, 1, 32, 128, 2
    ),
    # The MiniLM batch is small so that the whole grid runs in minutes on 2 shared cores.
    "minilm": SizeSpec("minilm", None, MINILM_SHAPE, 4, 1, 32, 128, 3),
}


def build_models(spec: SizeSpec) -> dict[str, torch.nn.Module]:
    """{"student", "teacher_de", "teacher_cb", "teacher_ce"} of one size, each built as the trainer builds a run's
    model section (`lead_dist.models.from_config.build_model`), in that order from seed 0 (all in eval mode)."""
    from lead_dist.config import ModelConfig
    from lead_dist.models.from_config import build_model

    def section(shape: dict[str, Any] | None, kind: str, **options: Any) -> ModelConfig:
        if shape is None:  # the real all-MiniLM-L6-v2
            return ModelConfig(path=MINILM_HUB_ID, kind=kind, **options)
        return ModelConfig(config=dict(shape), tokenizer=MINILM_HUB_ID, kind=kind, **options)

    de = {"pooling": "mean", "similarity": "cos"}
    de_teacher = spec.teacher_config if spec.student_config is not None else None
    torch.manual_seed(0)
    return {
        "student": build_model(section(spec.student_config, "de", **de)),
        "teacher_de": build_model(section(de_teacher, "de", **de)),
        "teacher_cb": build_model(section(spec.teacher_config, "cb", projection_dim=128)),
        "teacher_ce": build_model(section(spec.teacher_config, "ce")),
    }


def run_config(spec: SizeSpec, mode: str, teacher_kind: str | None, joint: bool, dtype: str) -> Config:
    """The run config this variant corresponds to (validated like a YAML config; data paths are placeholders)."""
    raw: dict[str, Any] = {
        "stage": "distill",
        "mode": mode,
        "data": {
            "train": "unused-by-the-benchmark",
            "num_negatives": spec.num_negatives,
            "query_max_length": spec.query_max_length,
            "passage_max_length": spec.passage_max_length,
        },
        "student": {"config": dict(MINILM_SHAPE), "tokenizer": MINILM_HUB_ID, "kind": "de"},
        "lead": {"k": spec.lead_k},
        "train": {"batch_size": spec.batch_size, "mixed_precision": dtype, "warmup_ratio": 0.0},
    }
    if teacher_kind is not None:
        raw["teacher"] = {"config": dict(MINILM_SHAPE), "tokenizer": MINILM_HUB_ID, "kind": teacher_kind}
        raw["teacher"]["trained"] = joint
        if teacher_kind == "ce":
            raw["teacher"]["candidates"] = "group"
    return config_from_dict(raw, source=f"throughput variant {mode}/{teacher_kind}")


class TrainedState:
    """One AdamW + schedule per model object, shared by every variant that trains that model."""

    def __init__(self) -> None:
        self._by_model: dict[int, tuple[torch.optim.Optimizer, Any]] = {}

    def trainee(self, name: str, raw: torch.nn.Module, trained: bool) -> Trainee:
        if not trained:
            return FrozenTrainee(name, raw)
        if id(raw) not in self._by_model:
            raw.requires_grad_(True)  # make_optimizer takes only parameters that require grad; activate() resets
            optimizer = make_optimizer(raw, 5e-5, 0.01)
            self._by_model[id(raw)] = (optimizer, linear_warmup_schedule(optimizer, 10**6, 0.0))
        return PlainTrainee(name, raw, raw, *self._by_model[id(raw)], grad_clip=2.0)


@dataclasses.dataclass
class Variant:
    """One cell of the grid and everything its step needs."""

    size: str
    dtype: str  # "no" (fp32) or "bf16", as train.mixed_precision
    mode: str  # contrastive | response | lead
    teacher_kind: str | None
    joint: bool
    config: Config
    trainees: dict[str, Trainee]
    batch: dict[str, Any]
    schedule: Any  # LayerSchedule for mode lead, else None
    examples: int  # queries per step
    steps_taken: int = 0
    last: Any = None  # the StepResult of the latest step
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))  # where autocast runs
    compiles: Any = None  # the CompileCounter of `with_speed(..., compile=True)`

    @property
    def name(self) -> str:
        teacher = "" if self.teacher_kind is None else f"-{self.teacher_kind}-{'joint' if self.joint else 'frozen'}"
        return f"{self.size}/{'fp32' if self.dtype == 'no' else self.dtype}/{self.mode}{teacher}"

    def activate(self) -> None:
        """Train mode and requires_grad as prepare_trainees sets them for this variant's frozen/joint choice."""
        for trainee in self.trainees.values():
            trainee.model.train(trainee.trained)
            trainee.model.requires_grad_(trainee.trained)

    def step(self) -> int:
        """One optimizer step of the real trainer (`lead_dist.train.step.run_step`) on the pre-collated batch; returns
        the queries it trained on. The step's result (phase times included) is kept in `last`."""
        self.activate()
        layers = self.schedule.at(self.steps_taken) if self.schedule is not None else ((), ())
        self.last = step.run_step(self.config, self.trainees, itertools.repeat(self.batch), layers, device=self.device)
        self.steps_taken += 1
        return self.examples

    def work(self) -> tuple[int, int]:
        """(FLOPs, non-pad tokens) of one step as the loop counts them (`step.step_work`, ColBERT's MaxSim included)."""
        layers = self.schedule.at(0) if self.schedule is not None else ((), ())
        return step.step_work(self.trainees, self.batch, False, layers)


def make_variant(
    spec: SizeSpec,
    mode: str,
    teacher_kind: str | None,
    joint: bool,
    dtype: str,
    models: dict[str, torch.nn.Module],
    batch: dict[str, Any],
    shared: TrainedState,
    device: torch.device | None = None,
) -> Variant:
    """One cell: its run config, its trainees (`models` holds "student" and, unless contrastive, "teacher"), the
    collated batch of each, and the layer schedule the loop would build (`setup.layer_schedule`)."""
    config = run_config(spec, mode, teacher_kind, joint, dtype)
    trainees = {"student": shared.trainee("student", models["student"], True)}
    if teacher_kind is not None:
        trainees["teacher"] = shared.trainee("teacher", models["teacher"], joint)
    schedule = setup.layer_schedule(config, {name: t.model for name, t in trainees.items()})
    variant = Variant(spec.name, dtype, mode, teacher_kind, joint, config, trainees, batch, schedule, spec.batch_size)
    variant.device = device or variant.device
    return variant


def make_variants(
    spec: SizeSpec, models: dict[str, torch.nn.Module], examples: list[dict], dtypes: tuple[str, ...]
) -> list[Variant]:
    """The grid of one size: contrastive, then response and LEAD for every teacher kind, frozen and joint."""
    from lead_dist.data import collate_for

    lengths = (spec.query_max_length, spec.passage_max_length)
    batches = {name: collate_for(model, examples, *lengths) for name, model in models.items()}
    cells: list[tuple[str, str | None, bool]] = [("contrastive", None, False)]
    for kind in TEACHER_KINDS:
        for joint in (False, True):
            cells += [("response", kind, joint), ("lead", kind, joint)]
    variants = []
    for dtype in dtypes:
        shared = TrainedState()
        for mode, kind, joint in cells:
            pair = {"student": "student"} | ({"teacher": f"teacher_{kind}"} if kind is not None else {})
            chosen = {role: models[name] for role, name in pair.items()}
            batch = {role: batches[name] for role, name in pair.items()}
            variants.append(make_variant(spec, mode, kind, joint, dtype, chosen, batch, shared))
    return variants


def with_speed(
    variant: Variant, shared: TrainedState | None = None, backend: str = "inductor", **speed: Any
) -> Variant:
    """A copy of `variant` whose run config sets the `train.speed` keys given. Switches that change a model (a frozen
    teacher held in bf16, compiled blocks) are applied by the trainer's own set-up step,
    `lead_dist.train.speed.apply_to_models`, to copies of the models; a trained copy gets its own optimizer from
    `shared` (a new TrainedState by default). Keys left out stay off here (not the device's default)."""
    from lead_dist.config import SpeedConfig
    from lead_dist.train.speed import Speed, apply_to_models

    config = variant.config
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, speed=SpeedConfig(**speed)))
    frozen_teacher = "teacher" in variant.trainees and not variant.trainees["teacher"].trained
    switches = Speed(0, bool(speed.get("teacher_bf16")) and frozen_teacher, bool(speed.get("compile")), 1)
    changed = [name for name in variant.trainees if switches.compile or (name == "teacher" and switches.teacher_bf16)]
    copies = {name: copy.deepcopy(variant.trainees[name].model) for name in changed}
    counter = apply_to_models(config, copies, switches, backend)
    shared = shared or TrainedState()
    trainees = dict(variant.trainees)
    for name, model in copies.items():
        trainees[name] = shared.trainee(name, model, trainees[name].trained)
    return dataclasses.replace(variant, config=config, trainees=trainees, steps_taken=0, last=None, compiles=counter)
