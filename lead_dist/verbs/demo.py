"""`lead-dist demo`: the main job end to end on the embedded demo data, in a few minutes on a laptop CPU.

Each step is a verb users have, called as they would call it:
  1. `prepare --format demo`: Python standard-library docstrings as a BEIR collection, then training shards;
  2. the initial student: the first layers of the teacher (the usual initialisation), saved as a model folder;
  3. `evaluate` the teacher and the initial student on the demo test split;
  4. `train CONFIG`: LEAD from the packaged all-MiniLM-L6-v2 teacher into that student;
  5. `evaluate` the trained student, and print teacher / before / after side by side (also written as JSON).

The hyper-parameters live in the config (configs/demo.yaml), not here; this module only orchestrates. The --out
folder is the demo's own: a rerun starts over (its prepare, train and evaluate run with --overwrite). It must be
new, empty or an earlier demo's (it carries the `lead_dist.guard` marker of kind demo), and apart from the config
and the models it reads: a rerun never overwrites a folder of the user's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lead_dist.atomic import atomic_write_text
from lead_dist.cli import main as lead_dist_main

METRICS = ("ndcg@10", "mrr@10", "recall@100")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/demo.yaml", help="training recipe (default configs/demo.yaml)")
    parser.add_argument("--out", default="demo_out", help="working folder for shards, runs and results")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.max_steps=50")


def _verb(*argv: str) -> None:
    """Run one `lead-dist` verb in this process; a non-zero exit stops the demo with the verb named."""
    code = lead_dist_main(list(argv))
    if code != 0:
        raise SystemExit(f"lead-dist demo: `lead-dist {' '.join(argv)}` failed with exit code {code}")


def _evaluate(model_dir: Path, data_dir: Path, out: Path, config) -> dict[str, float]:
    _verb(
        "evaluate", "--model", str(model_dir), "--data", str(data_dir), "--split", "test", "--out", str(out),
        "--passage-max-length", str(config.data.passage_max_length),
        "--query-max-length", str(config.data.query_max_length), "--top-k", "100", "--overwrite",
    )  # fmt: skip
    results = json.loads(out.read_text())
    return {name: float(results["metrics"][name]) for name in METRICS}


def _initial_student(config, folder: Path) -> Path:
    """The student before training, exactly as the trainer initialises it (same config section, same seed)."""
    from lead_dist.train.setup import build_models

    models = build_models(config)
    models["student"].save(folder)
    return folder


def _claim_out(out: Path, config_path: Path, config) -> None:
    from lead_dist.guard import check_apart, check_ours, mark_folder
    from lead_dist.train.preflight import model_inputs

    check_apart({"--out": out}, {"--config": config_path, **model_inputs(config)})
    check_ours(out, "demo", flag="--out", what="the demo writes its shards, runs and results into it")
    mark_folder(out, "demo")


def run(args: argparse.Namespace) -> int:
    from lead_dist.config import load_config

    config_path = Path(args.config)
    if not config_path.is_file():
        raise SystemExit(
            f"lead-dist demo: config {config_path} not found; run from the lead_dist checkout (make demo) "
            "or pass --config PATH"
        )
    out = Path(args.out)
    shards, runs = out / "shards", out / "runs"
    overrides = [
        f"data.train={shards}",
        f"data.dev={shards / 'source'}",
        f"output_dir={runs / 'demo'}",
        *args.overrides,
    ]
    config = load_config(config_path, overrides)
    _claim_out(out, config_path, config)
    started = time.perf_counter()

    print("== 1/5 prepare the embedded demo data", flush=True)
    _verb("prepare", "--format", "demo", "--out", str(shards), "--split", "train", "--overwrite")
    data_dir = shards / "source"

    print("== 2/5 build the initial student (first layers of the teacher)", flush=True)
    student_before = _initial_student(config, out / "student-init")

    print("== 3/5 evaluate the teacher and the initial student on the demo test split", flush=True)
    teacher = _evaluate(Path(config.teacher.path), data_dir, out / "eval-teacher.json", config)
    before = _evaluate(student_before, data_dir, out / "eval-before.json", config)

    print(f"== 4/5 train: {config_path} ({config.mode}, {config.train.max_steps} steps)", flush=True)
    _verb("train", str(config_path), *overrides, "--overwrite")

    print("== 5/5 evaluate the trained student", flush=True)
    student_after = Path(config.output_dir) / "export" / "student"
    after = _evaluate(student_after, data_dir, out / "eval-after.json", config)

    minutes = (time.perf_counter() - started) / 60
    summary = {
        "config": str(config_path),
        "overrides": overrides,
        "teacher": teacher,
        "before": before,
        "after": after,
        "student": str(student_after),
        "minutes": round(minutes, 2),
    }
    atomic_write_text(out / "demo_results.json", json.dumps(summary, indent=2) + "\n")
    print(f"\n{'metric':<12}{'teacher':>10}{'student before':>16}{'student after':>15}")
    for name in METRICS:
        print(f"{name:<12}{teacher[name]:>10.4f}{before[name]:>16.4f}{after[name]:>15.4f}")
    verdict = "better" if after["ndcg@10"] > before["ndcg@10"] else "NOT better"
    print(f"\nThe trained student is {verdict} than the initial one on nDCG@10 ({minutes:.1f} min in all).")
    print(f"Trained student: {student_after}  (loads with transformers and sentence-transformers)")
    print(f"Summary: {out / 'demo_results.json'}")
    return 0
