"""Learning curves of the quality protocol: dev nDCG@10 against optimizer steps.

    python -m benchmarks.quality.curves log RUN_DIR                    # a DE run's in-training evaluations
    python -m benchmarks.quality.curves rerank RUN_DIR CONFIG [KEY=VALUE ...] --data SPLIT_DIR --split dev \\
        --first-stage DEV.trec --depth 30 --out curve.json               # a CB or CE warm-up's checkpoints

A dual encoder is evaluated by the trainer itself every `train.eval_every` steps (`data.dev`: the dev queries over
the fixed dev-corpus sample that `lead-dist split --dev-corpus-size` writes); `from_log` reads those records. A
ColBERT or cross-encoder warm-up cannot retrieve by itself, so `rerank` exports each of its checkpoints
(`train.save_every`, kept with a large `train.keep_last`) and re-ranks a DE's dev top list with `lead-dist rerank`.

`plateau(curve)` is the protocol's stopping rule: the gain of the best value over the last quarter of the steps
against the best value before it is under 0.005 nDCG@10.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

PLATEAU_GAIN = 0.005
METRIC = "ndcg@10"


def from_log(run_dir: str | Path, metric: str = METRIC) -> list[tuple[int, float]]:
    """(step, metric) of every in-training evaluation in RUN_DIR/log.jsonl, in step order (a resumed run's log
    is truncated to its checkpoint by the trainer, so a step appears once)."""
    points = {}
    for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "eval":
            points[int(record["step"])] = float(record[metric])
    return sorted(points.items())


def plateau(curve: list[tuple[int, float]], gain: float = PLATEAU_GAIN) -> dict[str, Any]:
    """Whether the curve has plateaued: max over the last quarter of the steps minus max before it < `gain`.

    The last quarter is (3/4 x last step, last step]; the start value (step 0) belongs to the part before it. Needs
    points on both sides (else `plateaued` is None: the curve is too coarse to judge)."""
    if not curve:
        return {"plateaued": None, "reason": "no points"}
    last = curve[-1][0]
    before = [v for s, v in curve if s <= 0.75 * last]
    quarter = [v for s, v in curve if s > 0.75 * last]
    if not before or not quarter:
        return {"plateaued": None, "reason": "no point before or inside the last quarter"}
    improvement = max(quarter) - max(before)
    return {"plateaued": improvement < gain, "last_quarter_gain": improvement, "rule": f"gain < {gain}",
            "best_step": max(curve, key=lambda p: p[1])[0], "best": max(v for _s, v in curve)}  # fmt: skip


def rerank_checkpoints(run_dir: Path, config_path: str, overrides: list[str], rerank_args: list[str]) -> list:
    """(step, dev metrics) of every complete checkpoint of a warm-up run, re-ranking with each one's weights."""
    from lead_dist.cli import main as cli_main
    from lead_dist.config import load_config
    from lead_dist.train.checkpoint import list_checkpoints
    from lead_dist.train.resume import load_module_weights
    from lead_dist.train.setup import build_models

    config = load_config(config_path, overrides)
    model = build_models(config)["model"]
    points = []
    for step, directory in list_checkpoints(run_dir):
        load_module_weights(model, directory / "model.safetensors")
        with tempfile.TemporaryDirectory(prefix="curve-") as tmp:
            model.save(Path(tmp) / "model")
            out = Path(tmp) / "rerank.json"
            status = cli_main(["rerank", "--model", f"{tmp}/model", "--out", str(out), "--quiet", *rerank_args])
            if status:
                raise SystemExit(f"rerank of {directory} exited {status}")
            points.append((step, json.loads(out.read_text())["metrics"]))
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.curves", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    log_parser = sub.add_parser("log", help="a DE run's in-training dev evaluations")
    log_parser.add_argument("run_dir", type=Path)
    rerank_parser = sub.add_parser("rerank", help="re-rank with every checkpoint of a CB / CE warm-up")
    rerank_parser.add_argument("run_dir", type=Path)
    rerank_parser.add_argument("config")
    rerank_parser.add_argument("overrides", nargs="*")
    rerank_parser.add_argument("--out", required=True, type=Path)
    args, rest = parser.parse_known_args(argv)
    if args.what == "log":
        curve = from_log(args.run_dir)
        print(json.dumps({"curve": curve, "plateau": plateau(curve)}, indent=1))
        return 0
    points = rerank_checkpoints(args.run_dir, args.config, args.overrides, rest)
    curve = [(step, metrics[METRIC]) for step, metrics in points]
    payload = {"run_dir": str(args.run_dir), "rerank_args": rest, "points": points, "curve": curve,
               "plateau": plateau(curve)}  # fmt: skip
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps({"curve": curve, "plateau": payload["plateau"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
