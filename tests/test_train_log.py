"""TrainLogger: JSONL window records (hand-computed means and rates), TensorBoard scalars, resume, rank gating."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lead_dist.train.log import LOG_FILE, TrainLogger, peak_memory_gib


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _log_steps(logger: TrainLogger, steps: range) -> None:
    for step in steps:
        logger.log_step(
            step,
            losses={"total": torch.tensor(float(step)), "student": 2.0 * step},
            seconds=0.5 * step,
            examples=8,
            tokens=100 * step,
            learning_rates={"student": 1e-4 * step, "teacher": 2e-4},
            layer_pairs=((0, 2), (3, 7)),
            layer_weights=torch.tensor([0.25, 0.75]),
            step_flops=1e9,
            extra={"nonfinite_skipped": 0},
        )


def test_jsonl_records_hold_window_means_rates_and_mfu(tmp_path: Path) -> None:
    with TrainLogger(tmp_path, total_steps=5, log_every=2, peak_flops=1e10, progress_bar=False) as logger:
        _log_steps(logger, range(1, 6))
    records = _read(tmp_path / LOG_FILE)
    assert [r["step"] for r in records] == [2, 4, 5]  # every 2 steps, and the last step
    first, second, last = records
    # window steps 1-2: total losses 1, 2 -> 1.5; student 2, 4 -> 3; 16 examples in 0.5+1.0 s; 300 tokens
    assert first["window_steps"] == 2
    assert first["loss"] == {"total": 1.5, "student": 3.0}
    assert first["examples_per_s"] == pytest.approx(16 / 1.5)
    assert first["tokens_per_s"] == pytest.approx(300 / 1.5)
    assert first["step_s"] == pytest.approx(0.75)
    assert first["mfu"] == pytest.approx(2e9 / 1.5 / 1e10)
    assert first["tflops_per_s"] == pytest.approx(2e9 / 1.5 / 1e12)
    assert first["lr"] == {"student": pytest.approx(2e-4), "teacher": 2e-4}
    assert first["layers"] == {"student": [0, 2], "teacher": [3, 7], "weights": [0.25, 0.75]}
    assert first["nonfinite_skipped"] == 0
    assert first["peak_memory_gib"] > 0
    # window steps 3-4; the final window is the single step 5
    assert second["loss"]["total"] == 3.5 and second["examples_per_s"] == pytest.approx(16 / 3.5)
    assert last["window_steps"] == 1 and last["loss"]["student"] == 10.0


def test_tensorboard_gets_the_same_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TrainLogger(tmp_path, total_steps=4, log_every=2, peak_flops=1e10, progress_bar=False) as logger:
        _log_steps(logger, range(1, 5))
        logger.log_event("eval", 4, ndcg_at_10=0.5, split="dev")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "loss/total",
        "loss/student",
        "lr/student",
        "lr/teacher",
        "layers/student_1",
        "layers/teacher_1",
        "layers/weight_0",
        "throughput/examples_per_s",
        "throughput/tokens_per_s",
        "perf/mfu",
        "memory/peak_gib",
        "eval/ndcg_at_10",
    }
    assert expected <= tags, expected - tags
    assert [(e.step, e.value) for e in events.Scalars("loss/total")] == [(2, 1.5), (4, 3.5)]
    assert [e.value for e in events.Scalars("layers/teacher_1")] == [7.0, 7.0]


def test_non_finite_values_stay_valid_json_and_events_are_recorded(tmp_path: Path) -> None:
    with TrainLogger(tmp_path, total_steps=10, log_every=1, tensorboard=False, progress_bar=False) as logger:
        logger.log_step(1, losses={"total": float("nan"), "layers": float("inf")}, seconds=1.0, examples=4, tokens=0)
        logger.log_event("nonfinite", 1, in_row=1, loss=float("-inf"))
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]  # would raise on a bare NaN token
    assert records[0]["loss"] == {"total": "nan", "layers": "inf"}
    assert records[0]["examples_per_s"] == 4.0 and "mfu" not in records[0]
    assert records[1]["event"] == "nonfinite" and records[1]["loss"] == "-inf" and records[1]["in_row"] == 1


def test_resume_drops_records_written_after_the_checkpoint_and_a_torn_line(tmp_path: Path) -> None:
    with TrainLogger(tmp_path, total_steps=10, log_every=2, tensorboard=False, progress_bar=False) as logger:
        _log_steps(logger, range(1, 7))
    with open(tmp_path / LOG_FILE, "a") as handle:
        handle.write('{"step": 8, "loss": {"to')  # killed mid-line
    # the run resumes from a checkpoint at step 4: records 6 and the torn line belong to the lost future
    with TrainLogger(tmp_path, total_steps=10, log_every=2, start_step=4, tensorboard=False, progress_bar=False) as lg:
        _log_steps(lg, range(5, 7))
    assert [r["step"] for r in _read(tmp_path / LOG_FILE)] == [2, 4, 6]


def test_only_the_main_process_writes(tmp_path: Path) -> None:
    logger = TrainLogger(tmp_path / "rank1", total_steps=4, log_every=1, is_main=False)
    _log_steps(logger, range(1, 3))
    assert logger.log_event("eval", 2, x=1.0) is None
    logger.close()
    assert not (tmp_path / "rank1").exists()


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train.log_every must be >= 1"):
        TrainLogger(tmp_path, total_steps=4, log_every=0)
    with TrainLogger(tmp_path, total_steps=4, log_every=1, tensorboard=False, progress_bar=False) as logger:
        with pytest.raises(KeyError, match="'mfu' collides"):
            logger.log_step(1, losses={}, seconds=1.0, examples=1, tokens=1, extra={"mfu": 1.0})


def test_peak_memory_is_the_process_rss_on_cpu() -> None:
    import resource

    assert math.isclose(peak_memory_gib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, rel_tol=0.05)
    assert peak_memory_gib() > 0.05  # a python process with torch loaded holds well over 50 MiB


def test_without_a_terminal_each_record_is_echoed_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # under pytest stderr is not a terminal, as in a SLURM log: tqdm disables itself and records are echoed instead
    with TrainLogger(tmp_path, total_steps=2, log_every=2, tensorboard=False, peak_flops=1e10) as logger:
        _log_steps(logger, range(1, 3))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[train]")]
    assert len(lines) == 1
    assert lines[0].startswith("[train] step 2, total 1.5000, student 3.0000, 10.7 ex/s, mfu 13.3%, mem ")
