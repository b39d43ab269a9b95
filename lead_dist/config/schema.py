"""The run configuration's typed sections, their defaults and the allowed values: the one schema.

A YAML config has the top-level keys of `Config` and one mapping per section (`data`, `student`, `teacher` or
`model`, `lead`, `train`); `null` means None. Every config file starts with the command that runs it.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

STAGES = ("warmup", "distill")
MODES = ("lead", "response", "contrastive")
KINDS = ("de", "cb", "ce")
POOLINGS = ("cls", "mean", "lasttoken")  # lasttoken: each text's last real token (decoder embedders)
SIMILARITIES = ("dot", "cos")
CANDIDATES = ("global", "group")
STRATEGIES = ("random", "last", "skip", "fixed")
PRECISIONS = ("no", "bf16", "fp16")

# A dual encoder's keys: the final score's, those of LEAD's per-layer scores, then how its texts are written.
DE_OPTION_KEYS = ("pooling", "similarity", "scale", "layer_pooling", "layer_similarity", "layer_scale",
                  "query_prompt", "passage_prompt", "append_eos")  # fmt: skip

# Keys a model section accepts only in one role; the rest are shared by student, teacher and model.
STUDENT_ONLY_KEYS = ("from_teacher_layers",)
TEACHER_ONLY_KEYS = ("trained", "cache")


# DeepSpeed zero_optimization keys the trainer fills from the model's hidden size h when they say "auto" (what
# accelerate would fill from `model.config.hidden_size`, which our models keep on `.backbone`); validation refuses
# "auto" on any other key.
AUTO_ZERO_KEYS: dict[str, typing.Callable[[int], int]] = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "stage3_param_persistence_threshold": lambda h: 10 * h,
}


class ConfigError(ValueError):
    """A configuration problem, with the offending key and the fix in the message."""


@dataclass
class DataConfig:
    train: str | None = None  # folder of training shards written by `lead-dist prepare` (required)
    num_negatives: int = 3
    query_max_length: int = 32
    passage_max_length: int = 128
    num_workers: int = 0
    dev: str | None = None  # BEIR folder for in-training evaluation (with train.eval_every > 0)
    dev_split: str = "dev"
    dev_max_queries: int = 200  # the first N judged queries of the split, by id
    manifest: str | None = None  # with a brace-expanded shard list in `train`: where its manifest.json is
    retries: int = 3  # per shard behind a URL, for a dropped connection (see lead_dist/data/remote.py)
    retry_backoff_s: float = 1.0  # wait before retry n (0-based): retry_backoff_s * 2**n
    on_bad_shard: str = "error"  # a shard unlike its manifest entry: "error" (stop, naming it) or "skip" (leave it out)


@dataclass
class ModelConfig:
    """One model section (`student`, `teacher`, or `model` for warm-up).

    The model comes from exactly one source: `path` (a saved folder, a packaged hub id), `from_teacher_layers`
    (student only: the teacher's first N blocks) or `config` (fresh random weights from BertConfig kwargs, with
    `tokenizer` naming the tokenizer folder). With `path`, `num_layers: N` keeps only the loaded model's first N
    blocks (e.g. all-MiniLM-L6-v2's first 3 layers, whatever the teacher). Model options left null (pooling,
    similarity, scale, prompts for a DE; projection_dim, query_augmentation for a ColBERT) take the folder's stored
    value, else the model's default (a cosine DE: scale 20); options of another kind are an error.
    `candidates` (teacher and warm-up model): null means `group` for a cross encoder and `global` (every passage
    of every rank) otherwise, filled at parsing; the student is scored over the teacher's candidate set (contrastive
    mode without a teacher: global). `trained` (teacher only): false freezes it. `grad_clip: 0` disables clipping.
    `cache` (teacher only, frozen): a folder written by `lead-dist cache-teacher`; training reads the teacher's
    per-layer outputs from it and never builds the teacher (lead_dist/train/README.md, "Teacher caches").
    """

    path: str | None = None
    from_teacher_layers: int | None = None
    num_layers: int | None = None  # with `path`: keep only the loaded model's first N blocks
    config: dict[str, Any] | None = None
    tokenizer: str | None = None
    kind: str = "de"  # KINDS
    pooling: str | None = None  # POOLINGS
    similarity: str | None = None  # SIMILARITIES
    scale: float | None = None
    layer_pooling: str | None = None  # DE: how LEAD's per-layer scores pool (None = as `pooling`)
    layer_similarity: str | None = None  # DE: ... and compare (None = as `similarity`)
    layer_scale: float | None = None  # DE: ... and scale (None = `scale`, or the layer similarity's default)
    query_prompt: str | None = None  # DE: text put before every query (an instruction; null: the folder's, else "")
    passage_prompt: str | None = None  # DE: text put before every passage ("title text")
    append_eos: bool | None = None  # DE on a decoder: end every text with EOS (null: as the folder's tokenizer does)
    projection_dim: int | None = None
    query_augmentation: bool | None = None
    lr: float = 5e-5
    weight_decay: float = 0.01
    grad_clip: float = 2.0
    deepspeed: str | None = None  # a DeepSpeed JSON (launch/deepspeed/); batch, accumulation, clipping say "auto"
    trained: bool = True
    candidates: str | None = None  # CANDIDATES
    cache: str | None = None  # teacher only: a `lead-dist cache-teacher` folder to read the frozen teacher from

    def model_options(self) -> dict[str, Any]:
        """Keyword options for `lead_dist.models` loaders: only those set, so a folder's stored options (its
        lead_dist.json or sentence-transformers pooling) hold unless the config overrides them."""
        names = {"de": DE_OPTION_KEYS, "cb": ("projection_dim", "query_augmentation"), "ce": ()}
        return {name: getattr(self, name) for name in names[self.kind] if getattr(self, name) is not None}


@dataclass
class CoefConfig:
    student: float = 1.0
    teacher: float = 1.0
    response: float = 1.0
    layers: float = 1.0


@dataclass
class LeadConfig:
    k: int = 5  # layer pairs per step
    strategy: str = "random"  # STRATEGIES
    fixed: list[list[int]] | None = None  # strategy fixed: [[student_layer, teacher_layer], ...], k of them
    resample_every: int = 10
    temperature: float = 1.0
    layer_temperature: float = 10.0
    reweight: bool = True
    detach_targets: bool = False
    coef: CoefConfig = field(default_factory=CoefConfig)


@dataclass
class SpeedConfig:
    """`train.speed`: ways the step does less work for the same result (lead_dist/train/speed.py, chunking.py).

    null means the device's default, the fastest correct choice measured there (lead_dist/train/README.md, "Speed").
    """

    chunk_size: int | None = None  # texts per length-sorted chunk, each padded to its own longest; 0: one batch
    teacher_bf16: bool | None = None  # hold a frozen teacher in bf16 (needs mixed_precision bf16, no DeepSpeed)
    compile: bool | None = None  # torch.compile every transformer block of the models outside DeepSpeed
    length_bucket: int = 16  # chunk lengths rounded up to a multiple of this when compiled (bounds recompiles)


@dataclass
class TrainConfig:
    batch_size: int = 8  # queries per rank per micro-batch
    max_steps: int = 1000  # optimizer steps
    warmup_ratio: float = 0.1
    # Micro-batches per optimizer step. Accumulation does not add negatives: each micro-batch's queries are scored
    # against that micro-batch's candidates only (in-batch and cross-rank), never against earlier micro-batches'.
    grad_accum: int = 1
    mixed_precision: str = "no"  # PRECISIONS
    log_every: int = 10
    eval_every: int = 0  # steps between in-training evaluations on data.dev; 0: none
    save_every: int = 100  # steps between checkpoints (and the last step); 0: none
    keep_last: int = 3
    max_nonfinite_in_row: int = 5
    rank_timeout_s: float = 300.0  # a collective waiting longer on a dead or stuck rank fails
    num_epochs: int | None = None  # when set, also stop after this many passes over the data
    speed: SpeedConfig = field(default_factory=SpeedConfig)


@dataclass
class Config:
    seed: int = 888
    stage: str = "distill"  # STAGES: warmup (one model, contrastive) | distill (student + teacher)
    mode: str | None = None  # distill only, MODES; null means lead (filled at parsing); warm-up: leave unset
    output_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig | None = None
    teacher: ModelConfig | None = None
    model: ModelConfig | None = None
    lead: LeadConfig = field(default_factory=LeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def candidates(self) -> str:
        """The candidate set every distribution of this run uses (the teacher's, or the warm-up model's)."""
        section = self.model if self.stage == "warmup" else self.teacher
        return section.candidates if section is not None and section.candidates else "global"

    @property
    def trained_models(self) -> tuple[str, ...]:
        """Names of the sections whose model gets an optimizer in this run."""
        if self.stage == "warmup":
            return ("model",)
        if self.teacher is not None and self.teacher.trained and self.mode != "contrastive":
            return ("student", "teacher")
        return ("student",)


def closest_hint(name: str, valid: typing.Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the closest valid name, else the list of valid names."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(valid))}"
