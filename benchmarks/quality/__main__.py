"""Quality benchmark on SciFact: does LEAD beat response-based distillation, and by how much? (issues 6 and 16)

    .venv/bin/python -m benchmarks.quality --quick       # reduced grid (DE teacher, 1 seed, few steps)
    .venv/bin/python -m benchmarks.quality               # the full grid (configs/scifact/bench/grid.yaml)
    .venv/bin/python -m benchmarks.quality --dry-run     # print the commands, run nothing

The script only orchestrates the `lead-dist` verbs a user has (plus the step-0 probe,
`python -m benchmarks.quality.probe`), following the protocol written in configs/scifact/bench/grid.yaml: a dev
split carved from SciFact train -> hard negatives mined by a first-stage DE (the packaged all-MiniLM-L6-v2) ->
teachers and student warmed up alone to their dev plateau -> every distillation run and the contrastive baseline
from the same warmed student, for the same steps -> test evaluation on the whole corpus, per query -> paired
randomization tests. Hyper-parameters come from the committed recipes; what the grid changes is written in
grid.yaml and nowhere else.

Output folder (default runs/bench/quality-<grid>): one subfolder per step; a rerun skips finished steps. Results:
benchmarks/results/quality.json + quality.png + quality_curves.png (full grid), quality_quick.* (quick).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.machine import REPO_ROOT, log, machine, package_versions
from benchmarks.harness.results import RESULTS_DIR, write_json
from benchmarks.quality.adopt import AdoptError, adoptable_seeds, adopted_records, check_adoption, load_earlier
from benchmarks.quality.charts import write_chart, write_curves_chart
from benchmarks.quality.commands import (
    PROBE,
    Layout,
    distill_argv,
    evaluate_argv,
    evaluate_on_test,
    overrides_argv,
    path_overrides,
    probe_argv,
    rel,
    rerank_argv,
    test_targets,
    warm_up,
)
from benchmarks.quality.packaged import packaged_teachers
from benchmarks.quality.partial import finished_part, finished_steps
from benchmarks.quality.plan import Plan, PlanError, load_plan, reductions
from benchmarks.quality.probe_report import probe_tables
from benchmarks.quality.report import build_payload, markdown_table, tests_table
from benchmarks.quality.steps import StepFailed, StepRunner

DEFAULT_GRID_FILE = REPO_ROOT / "configs" / "scifact" / "bench" / "grid.yaml"


def check_recipes(plan: Plan, layout: Layout) -> None:
    """Load every recipe with the overrides it will get, before any step runs, so that a bad key fails in seconds
    rather than an hour into the grid (the trainer checks the same again when it starts)."""
    from lead_dist.config import ConfigError, load_config

    jobs = [(recipe, path_overrides(layout, layout.teacher_dir(kind)) + overrides_argv(plan.warmup_overrides))
            for kind, recipe in plan.teachers.items()]  # fmt: skip
    jobs.append((plan.student_warmup, path_overrides(layout, layout.student_warmup)
                 + overrides_argv(plan.student_warmup_overrides)))  # fmt: skip
    jobs += [(spec.config, distill_argv(plan, layout, spec, spec.seeds[0], layout.out)[3:]) for spec in plan.runs]
    jobs += [(packaged.warmup, path_overrides(layout, layout.teacher_dir(name)) + overrides_argv(plan.warmup_overrides))
             for name, packaged in plan.packaged_teachers.items()]  # fmt: skip
    for recipe, overrides in jobs:
        try:
            load_config(recipe, overrides)
        except ConfigError as exc:
            raise SystemExit(f"quality benchmark: recipe {rel(recipe)} with the grid's overrides: {exc}") from None


def dev_and_mining(runner: StepRunner, plan: Plan, layout: Layout) -> None:
    """1-2: the dev split, and hard negatives mined by the packaged MiniLM (a first-stage DE apart from the teachers)."""
    d = plan.dev_split
    runner.run("split", ["split", "--data", rel(plan.train.data), "--split", plan.train.split,
                         "--dev-queries", rel(d.queries), "--dev-corpus-size", str(d.corpus_size), "--seed", str(d.seed),
                         "--out", rel(layout.split)])  # fmt: skip
    packaged, embeddings = layout.base_model, layout.embeddings("packaged_minilm", "scifact")
    runner.run("eval-packaged_minilm-dev", evaluate_argv(plan, packaged, layout.split, "dev",
               layout.evaluation("packaged_minilm", "dev"), embeddings))  # fmt: skip
    runner.run("eval-packaged_minilm-devcorpus", evaluate_argv(plan, packaged, layout.dev_corpus, "dev",
               layout.evaluation("packaged_minilm", "devcorpus"), layout.embeddings("packaged_minilm", "devcorpus")))  # fmt: skip
    runner.run("search-train", ["search", "--model", packaged, "--index", rel(embeddings), "--queries", rel(layout.split),
                                "--qrels", rel(layout.split / "qrels" / f"{plan.train.split}.tsv"),
                                "--out", rel(layout.mined_run), "--top-k", str(plan.mining_top_k),
                                "--query-max-length", str(plan.evaluate["query_max_length"]),
                                "--dtype", str(plan.evaluate["dtype"])])  # fmt: skip
    runner.run("mine-train", ["mine", "--run", rel(layout.mined_run), "--format", "beir", "--input", rel(layout.split),
                              "--split", plan.train.split, "--depth", plan.mining_depth,
                              "--out", rel(layout.hard_shards)])  # fmt: skip
    # the dev queries get negatives the same way, for the probe only (never trained on): what the layer terms ask of
    # the student on held-out queries
    runner.run("search-dev", ["search", "--model", packaged, "--index", rel(embeddings), "--queries", rel(layout.split),
                              "--qrels", rel(layout.split / "qrels" / "dev.tsv"), "--out", rel(layout.mined_dev_run),
                              "--top-k", str(plan.mining_top_k),
                              "--query-max-length", str(plan.evaluate["query_max_length"]),
                              "--dtype", str(plan.evaluate["dtype"])])  # fmt: skip
    runner.run("mine-dev", ["mine", "--run", rel(layout.mined_dev_run), "--format", "beir", "--input", rel(layout.split),
                            "--split", "dev", "--depth", plan.mining_depth, "--out", rel(layout.dev_shards)])  # fmt: skip
    if plan.evaluate_packaged:  # the same corpus: the dev step's embeddings are reused
        for name, dataset in test_targets(plan, True).items():
            emb = embeddings if name == "scifact" else layout.embeddings("packaged_minilm", name)
            runner.run(f"eval-packaged_minilm-{name}", evaluate_argv(plan, packaged, dataset.data, dataset.split,
                       layout.evaluation("packaged_minilm", name), emb))  # fmt: skip


def in_parallel(runner: StepRunner, jobs: int, tasks: list[Any]) -> None:
    """Run the callables `tasks` (each runs one or more subprocess steps), `jobs` at once, each step with its share
    of the cores; re-raises a StepFailed. Steps outside this run alone, with every core."""
    if jobs <= 1 or runner.dry_run:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each step is a subprocess: threads only wait
        for future in [pool.submit(runner.sharing, max(1, (runner.threads or 1) // jobs), task) for task in tasks]:
            future.result()


def de_teacher_and_student(runner: StepRunner, plan: Plan, layout: Layout, jobs: int = 1) -> None:
    """3-4 for the DE teacher: its warm-up and evaluations, the student warm-up (the two warm-ups are independent and
    run side by side when jobs > 1), and the step-0 probe, which needs both."""

    def teacher() -> None:
        warm_up(runner, plan, layout, "de", plan.teachers["de"], layout.teacher_dir("de"), plan.warmup_overrides)
        de = rel(layout.teacher_model("de"))
        evaluate_on_test(runner, plan, layout, "teacher_de", de, zero_shot=True, run_out=True)
        runner.run("eval-teacher_de-dev", evaluate_argv(plan, de, layout.split, "dev",
                   layout.evaluation("teacher_de", "dev"), layout.embeddings("teacher_de", "scifact"))
                   + ["--run-out", rel(layout.first_stage("dev"))])  # fmt: skip

    def student() -> None:
        warm_up(runner, plan, layout, "student", plan.student_warmup, layout.student_warmup,
                plan.student_warmup_overrides)  # fmt: skip

    in_parallel(runner, jobs, [teacher, student])
    runner.run("probe-step0", probe_argv(plan, layout), program=PROBE)


def other_teachers(runner: StepRunner, plan: Plan, layout: Layout, jobs: int = 1) -> bool:
    """3 for the CB and CE teachers: warm-up, then re-ranking the DE teacher's first stage (dev and test). Returns
    whether the CE teacher counts (see grid.yaml)."""

    def one(kind: str) -> None:
        warm_up(runner, plan, layout, kind, plan.teachers[kind], layout.teacher_dir(kind), plan.warmup_overrides)
        runner.run(f"rerank-teacher_{kind}-dev", rerank_argv(plan, layout.teacher_model(kind), layout.split, "dev",
                   layout.first_stage("dev"), layout.evaluation(f"teacher_{kind}", "dev")))  # fmt: skip
        for name, dataset in test_targets(plan, True).items():
            runner.run(f"rerank-teacher_{kind}-{name}", rerank_argv(plan, layout.teacher_model(kind), dataset.data,
                       dataset.split, layout.first_stage(name), layout.evaluation(f"teacher_{kind}", name)))  # fmt: skip

    kinds = [k for k in plan.teachers if k != "de"]
    in_parallel(runner, jobs, [lambda kind=kind: one(kind) for kind in kinds])
    ce_counts = True
    if "ce" in kinds and plan.ce_must_beat_de_on_dev and not runner.dry_run:
        ce_counts = ce_beats_first_stage(layout.evaluation("teacher_ce", "dev"), layout.evaluation("teacher_de", "dev"))
        log(
            f"CE teacher {'counts' if ce_counts else 'does NOT count'}: its dev re-ranking against the DE's first stage"
        )
    return ce_counts


def ce_beats_first_stage(ce_dev: Path, de_dev: Path) -> bool:
    return json.loads(ce_dev.read_text())["metrics"]["ndcg@10"] > json.loads(de_dev.read_text())["metrics"]["ndcg@10"]


@dataclass(frozen=True)
class Only:
    """The student runs to train (`--only-seeds`, `--only-runs`; None: all of the grid's). Every step before them is
    the grid's own, so the folder stays the grid's: to spread a grid's seeds over sittings, or to train only the
    seeds an earlier results file does not hold (adopt.py)."""

    seeds: tuple[int, ...] | None = None
    runs: tuple[str, ...] | None = None

    def keeps(self, run: str, seed: int) -> bool:
        return (self.seeds is None or seed in self.seeds) and (self.runs is None or run in self.runs)


def students(runner: StepRunner, plan: Plan, layout: Layout, specs: list[Any], jobs: int = 1,
             only: Only = Only()) -> None:  # fmt: skip
    """5: the student runs `specs` (each for its seeds, those `only` keeps), each evaluated on test; `jobs`
    (train + evaluate) pairs at once. Seeds outermost, so that a stopped grid has whole seeds of every method rather
    than every seed of some."""
    seeds = sorted({seed for spec in specs for seed in spec.seeds})
    work = [(spec, seed) for seed in seeds for spec in specs if seed in spec.seeds and only.keeps(spec.name, seed)]

    def one(spec: Any, seed: int) -> None:
        out = layout.student_dir(spec.name, seed)
        runner.run(f"train-{spec.name}-seed{seed}", distill_argv(plan, layout, spec, seed, out), fresh_dir=out)
        evaluate_on_test(runner, plan, layout, f"{spec.name}-seed{seed}", rel(layout.student_model(spec.name, seed)),
                         zero_shot=spec.zero_shot)  # fmt: skip

    in_parallel(runner, jobs, [lambda spec=spec, seed=seed: one(spec, seed) for spec, seed in work])


def run_grid(runner: StepRunner, plan: Plan, layout: Layout, jobs: int, packaged_only: bool = False,
             only: Only = Only()) -> list[str]:  # fmt: skip
    """The protocol in the order that gives the verdict soonest: everything the summary needs (the DE teacher, the
    student warm-up, the probe, the DE-teacher runs over all seeds) before the CB and CE teachers, their runs and the
    ablations. Returns the runs skipped (those of a CE teacher that does not count).

    `packaged_only`: after the shared start (the split, mining, the DE teacher and the warmed student), only the
    packaged teachers and their runs. Their steps are disjoint from the DE runs', so a second process on the same
    output folder can run a packaged teacher's regime beside a first one that trains the DE seeds."""
    dev_and_mining(runner, plan, layout)
    de_teacher_and_student(runner, plan, layout, jobs)
    if packaged_only:
        packaged_teachers(runner, plan, layout)
        packaged = [spec for spec in plan.runs if spec.teacher in plan.packaged_teachers]
        students(runner, plan, layout, packaged, jobs, only)
        return []
    first = [spec for spec in plan.runs if spec.teacher == "de" and len(spec.seeds) > 1]
    students(runner, plan, layout, first, jobs, only)
    ce_counts = other_teachers(runner, plan, layout, jobs)
    packaged_teachers(runner, plan, layout)
    skipped = [spec.name for spec in plan.runs if spec.teacher == "ce" and not ce_counts]
    rest = [spec for spec in plan.runs if spec not in first and spec.name not in skipped]
    students(runner, plan, layout, rest, jobs, only)
    return skipped


def threads_per_step(jobs: int, cores: int | None = None) -> int:
    """Each step's torch threads: the cores (default: all usable ones) shared among the steps that run at once
    (oversubscribed OpenMP threads make a step many times slower: docs/ENVIRONMENT.md)."""
    return max(1, (cores or len(os.sched_getaffinity(0))) // max(1, jobs))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the reduced grid (same as --grid quick)")
    parser.add_argument("--grid", default=None, help="grid name in the grid file (default full; quick with --quick)")
    parser.add_argument("--grid-file", type=Path, default=DEFAULT_GRID_FILE, help="the plan (YAML)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/bench/quality-<grid>); resumable")
    parser.add_argument("--results-name", help="results file stem (default quality, or quality_<grid>)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON and charts go")
    parser.add_argument("--base-model", type=Path, help="all-MiniLM-L6-v2 folder (default: the packaged one)")
    parser.add_argument("--cores", type=int, help="cores the steps may use (default: all usable ones)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="steps at once: independent warm-ups and student runs (each gets cores / jobs threads)",
    )
    parser.add_argument("--packaged-only", action="store_true",
                        help="only the packaged teachers' stage and runs (after the shared start; no results file): "
                        "a second process on the same --out can run them beside the DE seeds")  # fmt: skip
    parser.add_argument("--only-seeds", type=lambda text: tuple(int(x) for x in text.split(",")),
                        help="comma-separated: train the student runs of these of the grid's seeds only (all the "
                        "steps before them as planned); --report-only later reports every seed finished")  # fmt: skip
    parser.add_argument(
        "--only-runs",
        type=lambda text: tuple(text.split(",")),
        help="comma-separated: train only these of the grid's student runs (as --only-seeds)",
    )
    parser.add_argument("--adopt", type=Path,
                        help="with --report-only: an earlier results JSON of this grid whose per-seed records stand "
                        "for the seeds this folder has not trained, if this folder's shared start reproduces that "
                        "file's bit for bit (benchmarks/quality/adopt.py); refused otherwise")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: the results of the steps finished so far, each run over its finished "
                        "seeds (`partial` in the JSON says which)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick and args.grid not in (None, "quick"):
        parser.error(f"--quick contradicts --grid {args.grid}")
    args.grid = "quick" if args.quick else (args.grid or "full")
    if args.adopt and not args.report_only:
        parser.error("--adopt goes with --report-only (train the missing seeds first, with --only-seeds)")
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
    layout = Layout(out, args.base_model)
    check_recipes(plan, layout)
    runner = StepRunner(out, REPO_ROOT, dry_run=args.dry_run, log=log, threads=threads_per_step(1, args.cores))
    started = time.perf_counter()
    # The machine that ran the steps is the one the numbers belong to: recorded by the first invocation on this
    # output folder and kept when a later one resumes (its own machine goes under machine_this_invocation).
    this_machine = machine()
    machine_file = out / "machine.json"
    if not args.dry_run and not machine_file.is_file():
        out.mkdir(parents=True, exist_ok=True)
        machine_file.write_text(json.dumps(this_machine, indent=1))
    partial, earlier, adopted = None, None, {}
    name = args.results_name or ("quality" if args.grid == "full" else f"quality_{args.grid}")
    try:
        if args.report_only:
            runner.results = finished_steps(out)
            if args.adopt:
                earlier = _earlier_results(args.adopt, args.results_dir / f"{name}.json")
                adopted = adopted_records(earlier, adoptable_seeds(earlier, plan))
            plan, partial = finished_part(plan, layout, {run: set(map(int, recs)) for run, recs in adopted.items()})
            skipped = []
        else:
            only = _only(args, plan)
            skipped = run_grid(runner, plan, layout, args.jobs, args.packaged_only, only)
            if only != Only() and not args.dry_run:  # a subset of the runs: report what has finished, as --report-only
                runner.results = finished_steps(out)
                plan, partial = finished_part(plan, layout)
    except StepFailed as exc:
        print(f"quality benchmark: {exc}", file=sys.stderr)
        return 1
    except (AdoptError, PlanError) as exc:
        print(f"quality benchmark: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    if args.packaged_only:
        log("the packaged teachers' steps are done; run again without --packaged-only for the rest and the results")
        return 0
    payload = build_payload(plan, runner.results, layout, skipped_runs=skipped, adopted=adopted)
    payload["partial"] = partial
    if earlier is not None:
        try:
            payload["adopted"] = check_adoption(payload, earlier, str(args.adopt))
        except AdoptError as exc:
            print(f"quality benchmark: {exc}", file=sys.stderr)
            return 2
    payload["machine"] = json.loads(machine_file.read_text()) if machine_file.is_file() else this_machine
    payload["machine_this_invocation"] = this_machine
    payload["load_average_at_end"] = machine()["load_average_1_5_15"]
    payload["versions"] = package_versions("torch", "transformers", "accelerate", "faiss-cpu", "lead_dist")
    payload["base_model"] = layout.base_model + ("" if layout.base_model_given else " (the packaged all-MiniLM-L6-v2)")
    payload["wall_seconds_this_invocation"] = round(time.perf_counter() - started, 1)
    payload["reduced_from_full"] = reductions(plan, full) if args.grid != "full" else None
    payload["command"] = (
        "python -m benchmarks.quality "
        + ("--quick" if args.grid == "quick" else f"--grid {args.grid}")
        + (f" --jobs {args.jobs}" if args.jobs != 1 else "")
    )
    # Each step's torch threads decide its float reductions' order: a rerun reproduces the numbers with the same
    # --jobs on a machine with as many cores, of the same kind.
    payload["threads_per_step"] = {"alone": threads_per_step(1, args.cores),
                                   "side_by_side": threads_per_step(args.jobs, args.cores)}  # fmt: skip
    table = markdown_table(payload)
    payload["table_markdown"] = table
    payload["tests_markdown"] = tests_table(payload)
    payload["probe_markdown"] = probe_tables(payload)
    json_path = write_json(name, payload, args.results_dir)
    png_path = write_chart(name, payload, args.results_dir)
    curves_path = write_curves_chart(f"{name}_curves", payload, args.results_dir)
    print(table, payload["tests_markdown"], payload["probe_markdown"], sep="\n\n")
    print(json.dumps({"summary": payload["summary"], "regimes": payload["regimes"]}, indent=1))
    log(f"wrote {json_path}, {png_path} and {curves_path}")
    return 0


def _only(args: argparse.Namespace, plan: Plan) -> Only:
    """--only-seeds and --only-runs, checked against the grid (a PlanError names what it does not plan)."""
    unknown = [str(seed) for seed in args.only_seeds or () if seed not in plan.seeds]
    unknown += [run for run in args.only_runs or () if run not in {spec.name for spec in plan.runs}]
    if unknown:
        raise PlanError(f"--only-seeds / --only-runs: grid {args.grid} plans no {', '.join(unknown)} (seeds "
                        f"{list(plan.seeds)}, runs {[spec.name for spec in plan.runs]})")  # fmt: skip
    return Only(args.only_seeds, args.only_runs)


def _earlier_results(path: Path, results_path: Path) -> dict[str, Any]:
    """The results file to adopt from, which must not be the one this report writes (it would be replaced by a
    report built from it: with another --results-name both stay, and git diff shows what changed)."""
    if Path(path).resolve() == results_path.resolve():
        raise AdoptError(f"--adopt {path} is the file this report writes; pass another --results-name")
    return load_earlier(path)


if __name__ == "__main__":
    sys.exit(main())
