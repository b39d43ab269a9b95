"""Training progress on the main process: a tqdm bar, JSONL records and TensorBoard scalars every N steps.

The loop calls `TrainLogger.log_step` once per optimizer step on EVERY rank (cheap: non-main ranks do nothing),
and `log_event` for things that are not a step (an evaluation, a skipped non-finite step, a checkpoint).
Each record written to `output_dir/log.jsonl` covers the window of steps since the previous record:

    {"step": 20, "time": <unix s>, "window_steps": 10,
     "loss": {"total": .., "student": .., ...},          mean over the window of each loss term
     "lr": {"student": .., "teacher": ..},               at the logged step
     "layers": {"student": [..], "teacher": [..], "weights": [..]},   at the logged step (absent if none)
     "examples_per_s": .., "tokens_per_s": ..,           this rank's examples / tokens over the window's time
     "step_s": ..,                                        mean seconds per step
     "tflops_per_s": .., "mfu": ..,                      when step FLOPs and a peak were given
     "peak_memory_gib": ..,                               max_memory_allocated (GPU) or peak RSS (CPU)
     ...extra}

Non-finite numbers are written as the strings "nan", "inf", "-inf" so every line stays valid JSON.
TensorBoard tags: loss/<term>, lr/<model>, layers/student_<k>, layers/teacher_<k>, layers/weight_<k>,
throughput/examples_per_s, throughput/tokens_per_s, throughput/step_s, perf/mfu, perf/tflops_per_s,
memory/peak_gib, and <event>/<key> for numeric fields of events.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lead_dist.atomic import atomic_write_text

LOG_FILE = "log.jsonl"
# Field names of a step record; `extra` may not reuse them (even those absent from a given record, e.g. "mfu").
STANDARD_FIELDS = frozenset(
    ("step", "time", "event", "window_steps", "loss", "lr", "layers", "examples_per_s", "tokens_per_s", "step_s")
    + ("tflops_per_s", "mfu", "peak_memory_gib")
)


def _number(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().item())
    return float(value)


def _jsonable(value: Any) -> Any:
    """Tensors -> numbers, non-finite floats -> strings, containers recursively."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist() if value.dim() else _number(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def peak_memory_gib(device: torch.device | None = None) -> float:
    """Peak memory of this process: CUDA max_memory_allocated on a GPU device, else peak resident set size."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


def _truncate_after(path: Path, step: int) -> None:
    """Drop records with a step beyond `step` and a torn last line (a kill mid-write), atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


class TrainLogger:
    """Progress bar + JSONL + TensorBoard, all on the main process only."""

    def __init__(
        self,
        output_dir: str | Path,
        *,
        total_steps: int,
        log_every: int,
        is_main: bool = True,
        start_step: int = 0,
        tensorboard: bool = True,
        peak_flops: float | None = None,
        device: torch.device | None = None,
        progress_bar: bool = True,
    ) -> None:
        if log_every < 1:
            raise ValueError(f"train.log_every must be >= 1, got {log_every}")
        self.is_main = is_main
        self.log_every = log_every
        self.total_steps = total_steps
        self.peak_flops = peak_flops
        self.device = device
        self.path = Path(output_dir) / LOG_FILE
        self._echo = progress_bar  # progress_bar=False: JSONL/TensorBoard only, nothing on the terminal
        self._reset_window()
        self._bar = None
        self._tb = None
        self._file = None
        if not is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A resumed run continues the same log, minus what the killed run wrote after the checkpoint it resumes.
        _truncate_after(self.path, start_step)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = start_step + 1 if start_step > 0 else None  # same for TensorBoard's events
            self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"), purge_step=purge)
        if progress_bar:
            from tqdm.auto import tqdm

            # disable=None: no bar when stderr is not a terminal (SLURM logs, CI); a summary line per record instead
            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True, disable=None
            )

    def _reset_window(self) -> None:
        self._steps = 0
        self._seconds = 0.0
        self._examples = 0
        self._tokens = 0
        self._flops = 0.0
        self._loss_sums: dict[str, float] = {}
        self._loss_counts: dict[str, int] = {}

    def log_step(
        self,
        step: int,
        *,
        losses: Mapping[str, Any],
        seconds: float,
        examples: int,
        tokens: int,
        learning_rates: Mapping[str, float] | None = None,
        layer_pairs: tuple[Sequence[int], Sequence[int]] | None = None,
        layer_weights: Sequence[float] | Any | None = None,
        step_flops: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Account one finished step; write and return a record when `step` closes a window (else None).

        `losses`: loss terms (tensors or floats) of this step; `seconds`: its wall time; `examples`, `tokens`:
        what this rank processed (queries and passages, and their non-pad tokens over every model).
        """
        if not self.is_main:
            return None
        self._steps += 1
        self._seconds += seconds
        self._examples += examples
        self._tokens += tokens
        self._flops += step_flops or 0.0
        for name, value in losses.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + _number(value)
            self._loss_counts[name] = self._loss_counts.get(name, 0) + 1
        if self._bar is not None:
            self._bar.update(1)
            if "total" in losses:
                self._bar.set_postfix(loss=f"{_number(losses['total']):.4f}", refresh=False)
        if step % self.log_every != 0 and step != self.total_steps:
            return None
        record = self._window_record(step, learning_rates, layer_pairs, layer_weights, step_flops, extra)
        self._reset_window()
        self._write(record)
        return record

    def _window_record(
        self,
        step: int,
        learning_rates: Mapping[str, float] | None,
        layer_pairs: tuple[Sequence[int], Sequence[int]] | None,
        layer_weights: Sequence[float] | Any | None,
        step_flops: float | None,
        extra: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        seconds = max(self._seconds, 1e-12)
        record: dict[str, Any] = {
            "step": step,
            "time": time.time(),
            "window_steps": self._steps,
            "loss": {k: self._loss_sums[k] / self._loss_counts[k] for k in self._loss_sums},
            "lr": {k: float(v) for k, v in (learning_rates or {}).items()},
            "examples_per_s": self._examples / seconds,
            "tokens_per_s": self._tokens / seconds,
            "step_s": self._seconds / max(self._steps, 1),
        }
        if layer_pairs is not None:
            student, teacher = layer_pairs
            record["layers"] = {"student": [int(i) for i in student], "teacher": [int(i) for i in teacher]}
            if layer_weights is not None:
                weights = layer_weights.tolist() if isinstance(layer_weights, torch.Tensor) else layer_weights
                record["layers"]["weights"] = [float(w) for w in weights]
        if step_flops is not None:
            record["tflops_per_s"] = self._flops / seconds / 1e12
            if self.peak_flops:
                record["mfu"] = self._flops / seconds / self.peak_flops
        record["peak_memory_gib"] = peak_memory_gib(self.device)
        for key, value in (extra or {}).items():
            if key in STANDARD_FIELDS:
                raise KeyError(f"log extra key {key!r} collides with a standard record field")
            record[key] = value
        return record

    def log_event(self, event: str, step: int, **fields: Any) -> dict[str, Any] | None:
        """A non-step record: {"event": event, "step": step, ...fields}; numeric fields also go to TensorBoard."""
        if not self.is_main:
            return None
        record = {"event": event, "step": step, "time": time.time(), **fields}
        self._write(record)
        if self._bar is not None:
            self._bar.write(f"[step {step}] {event}: {json.dumps(_jsonable(fields))}")
        return record

    def _write(self, record: Mapping[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
        self._file.flush()
        if "event" not in record and (self._bar is None or self._bar.disable) and self._echo:
            print(_summary_line(record), file=sys.stderr, flush=True)
        if self._tb is not None:
            for tag, value in _scalars(record):
                self._tb.add_scalar(tag, value, global_step=int(record["step"]))
            self._tb.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()
        self._bar = self._tb = self._file = None

    def __enter__(self) -> TrainLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary_line(record: Mapping[str, Any]) -> str:
    """One human line per step record, for runs without a progress bar."""
    parts = [f"step {record['step']}"]
    parts += [f"{name} {value:.4f}" for name, value in record["loss"].items()]
    parts.append(f"{record['examples_per_s']:.1f} ex/s")
    if "mfu" in record:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    parts.append(f"mem {record['peak_memory_gib']:.2f} GiB")
    return "[train] " + ", ".join(parts)


def _scalars(record: Mapping[str, Any]) -> list[tuple[str, float]]:
    """TensorBoard (tag, value) pairs of a record; see the module docstring for the tags."""
    out: list[tuple[str, float]] = []
    if "event" in record:
        prefix = str(record["event"])
        for key, value in record.items():
            if key not in ("event", "step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append((f"{prefix}/{key}", float(value)))
        return out
    out += [(f"loss/{k}", float(v)) for k, v in record["loss"].items()]
    out += [(f"lr/{k}", float(v)) for k, v in record["lr"].items()]
    layers = record.get("layers", {})
    for role in ("student", "teacher"):
        out += [(f"layers/{role}_{k}", float(i)) for k, i in enumerate(layers.get(role, []))]
    out += [(f"layers/weight_{k}", float(w)) for k, w in enumerate(layers.get("weights", []))]
    for key, tag in (
        ("examples_per_s", "throughput/examples_per_s"),
        ("tokens_per_s", "throughput/tokens_per_s"),
        ("step_s", "throughput/step_s"),
        ("mfu", "perf/mfu"),
        ("tflops_per_s", "perf/tflops_per_s"),
        ("peak_memory_gib", "memory/peak_gib"),
    ):
        if key in record:
            out.append((tag, float(record[key])))
    return out
