"""What LEAD's per-layer distributions look like before distillation starts (step 0), for a DE teacher and a DE student.

    .venv/bin/python -m benchmarks.quality.probe --teacher DIR --student DIR --shards DIR --out probe.json \
        [--dev-shards DIR] [--arm NAME=RECIPE ... --seeds 888,889 --steps 64]

For each way of scoring the intermediate layers (`SCORINGS`: the layer_pooling / layer_similarity / layer_scale
options of lead_dist.models.DualEncoder; the final score stays the model's own), on the first `--batches` batches of
the training shards (8 queries x (1 positive + 3 negatives) by default: the grid's distillation batch, candidates =
every passage of the batch, as LEAD's global candidate set on one rank):
* every layer's distribution softmax(s^l) of each model: mean entropy over the queries next to log(C) (a uniform
  distribution's), its ground-truth cross entropy (LEAD's layer gap), and how often the positive ranks first;
* KL(teacher layer a || student layer b) for every pair (a, b), and the mean KL over the pairs LEAD aligns: for
  `random` the expectation over every equally likely draw of K teacher and K student layers (sorted, paired by rank),
  and the pairs of `last` and `skip`; with the response KL(teacher final || student final) beside them.
`step0_layer_kl_mean` (the grid's summary) is the `random` expectation under the scoring the recipes use.
A DE's last block is scored as its final score whatever the scoring (lead_dist/models/dual_encoder.py), so the
last layer's row always equals the final one.

Under the chosen scoring, the same measurements on `--dev-shards` (the dev queries, negatives mined the same way:
held out, so they show what the layer terms ask of the student off its training queries), and for each
`--arm NAME=RECIPE` (a LEAD run of the grid) the pairs it aligns over `--steps` steps for each of `--seeds`, their
step-0 KL and the step-0 value of its layer term, on training and dev batches (probe_arms.py).
Same models, shards and arguments: same numbers (no dropout, batches in shard order, negatives chosen by a seed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import torch

# name -> the DE's per-layer scoring options (the reference's is cls_dot: LEAD_SPEC section 2)
SCORINGS: dict[str, dict[str, Any]] = {
    "mean_cos20": {"layer_pooling": "mean", "layer_similarity": "cos", "layer_scale": 20.0},
    "cls_dot": {"layer_pooling": "cls", "layer_similarity": "dot", "layer_scale": 1.0},
    "mean_dot": {"layer_pooling": "mean", "layer_similarity": "dot", "layer_scale": 1.0},
    "cls_cos20": {"layer_pooling": "cls", "layer_similarity": "cos", "layer_scale": 20.0},
}


def read_batches(shards: Path, batches: int, batch_size: int, negatives: int, seed: int) -> list[list[dict]]:
    """The first batches x batch_size training examples with `negatives` negatives each (examples with fewer are
    skipped), in shard order; which negatives is drawn from `seed`, as the stream samples them."""
    from lead_dist.data import read_manifest, read_shard

    manifest = read_manifest(shards)
    rng = random.Random(seed)
    examples: list[dict] = []
    for entry in manifest["shards"]["train"]:
        for record in read_shard(shards / entry["name"], entry["count"]):
            if len(record["neg_ids"]) < negatives:
                continue
            chosen = sorted(rng.sample(range(len(record["neg_ids"])), negatives))
            pos = rng.randrange(len(record["pos_ids"]))
            examples.append({
                "qid": record["qid"], "query": record["query"],
                "pos_id": record["pos_ids"][pos], "pos_title": record["pos_titles"][pos],
                "pos_text": record["pos_texts"][pos],
                **{f"neg_{key}": [record[f"neg_{key}"][i] for i in chosen] for key in ("ids", "titles", "texts")},
            })  # fmt: skip
            if len(examples) == batches * batch_size:
                return [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    raise SystemExit(
        f"{shards}: only {len(examples)} examples with >= {negatives} negatives; need {batches * batch_size}"
    )


@torch.no_grad()
def layer_scores(model: Any, batch: list[dict], lengths: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(final [Q, C], every layer [L, Q, C]) over the batch's passages; C = all of them (one rank's global set)."""
    from lead_dist.data import collate_for
    from lead_dist.train.objective import score_bi_encoder

    tokens = collate_for(model, batch, *lengths)
    final, per_layer, _group = score_bi_encoder(model, tokens, tuple(range(model.num_layers)), "global")
    return final.float(), per_layer.float()


def distribution_stats(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """[Q, C] -> mean entropy (nats), ground-truth cross entropy, top-1 share of the positive."""
    log_p = torch.log_softmax(scores, dim=-1)
    return {
        "entropy": float(-(log_p.exp() * log_p).sum(-1).mean()),
        "cross_entropy": float(-log_p.gather(1, labels[:, None]).mean()),
        "top1": float((scores.argmax(-1) == labels).float().mean()),
    }


def kl(target: torch.Tensor, learner: torch.Tensor) -> float:
    from lead_dist.lead import kl_from_scores

    return float(kl_from_scores(target, learner))


def aligned_means(kl_matrix: list[list[float]], k: int) -> dict[str, Any]:
    """Mean KL over the pairs each selection strategy aligns; kl_matrix[b][a] = KL(teacher a || student b)."""
    from lead_dist.lead.selection import select_layers

    depth_s, depth_t = len(kl_matrix), len(kl_matrix[0])
    draws = [
        sum(kl_matrix[b][a] for b, a in zip(s, t, strict=True)) / k
        for s in itertools.combinations(range(depth_s), k)
        for t in itertools.combinations(range(depth_t), k)
    ]
    result: dict[str, Any] = {"random_expected": sum(draws) / len(draws), "random_min": min(draws), "k": k}
    for strategy in ("last", "skip"):
        s, t = select_layers(strategy, depth_s, depth_t, k, seed=0, step=0)
        result[strategy] = sum(kl_matrix[b][a] for b, a in zip(s, t, strict=True)) / k
        result[f"{strategy}_pairs"] = [list(s), list(t)]
    return result


def measure(teacher: Any, student: Any, batches: list[list[dict]], lengths: tuple[int, int]) -> dict[str, Any]:
    """One scoring on one set of batches: each layer's mean statistics (the final score last), the mean KL matrix
    (kl[b][a] = KL(teacher layer a || student layer b)), the response KL, and per batch what the arms need (the KL
    matrix and the teacher layers' gaps: their untempered cross entropies, what LEAD re-weights with)."""
    stats: dict[str, list] = {"teacher": [], "student": []}
    kl_batches: list[list[list[float]]] = []
    response = 0.0
    for batch in batches:
        t_final, t_layers = layer_scores(teacher, batch, lengths)
        s_final, s_layers = layer_scores(student, batch, lengths)
        labels = torch.arange(len(batch)) * (t_final.shape[1] // len(batch))
        stats["teacher"].append([distribution_stats(t, labels) for t in (*t_layers, t_final)])
        stats["student"].append([distribution_stats(s, labels) for s in (*s_layers, s_final)])
        kl_batches.append([[kl(t_layers[a], s_layers[b]) for a in range(teacher.num_layers)]
                           for b in range(student.num_layers)])  # fmt: skip
        response += kl(t_final, s_final) / len(batches)
    kl_mean = [[sum(m[b][a] for m in kl_batches) / len(batches) for a in range(teacher.num_layers)]
               for b in range(student.num_layers)]  # fmt: skip
    return {
        "log_candidates": math.log(t_final.shape[1]),
        "candidates": t_final.shape[1],
        **{model: _mean_stats(per_batch) for model, per_batch in stats.items()},
        "kl_teacher_layer_to_student_layer": kl_mean,
        "response_kl": response,
        "per_batch": {"kl": kl_batches,
                      "teacher_gaps": [[layer["cross_entropy"] for layer in b[:-1]] for b in stats["teacher"]]},
    }  # fmt: skip


def probe(teacher_dir: str, student_dir: str, batches: list[list[dict]], lengths: tuple[int, int], k: int,
          scorings: dict[str, dict[str, Any]] | None = None) -> dict:  # fmt: skip
    """`measure` under each per-layer scoring (default: all of SCORINGS), with the mean KL of each selection."""
    from lead_dist.models import load_model

    results: dict[str, Any] = {}
    for name, options in (scorings or SCORINGS).items():
        teacher = load_model(teacher_dir, kind="de", **options).eval()
        student = load_model(student_dir, kind="de", **options).eval()
        measured = measure(teacher, student, batches, lengths)
        results[name] = {"options": options, **measured,
                         "aligned": aligned_means(measured["kl_teacher_layer_to_student_layer"], k)}  # fmt: skip
    return results


def arms_report(arms: list[Any], measured: dict[str, dict], depths: tuple[int, int], seeds: list[int], steps: int
                ) -> dict[str, Any]:  # fmt: skip
    """Each arm's pairs over its run and their step-0 numbers on every set of batches measured (probe_arms.py)."""
    from benchmarks.quality.probe_arms import draws, summarise

    report = {}
    for arm in arms:
        used = draws(arm, *depths, seeds, steps)
        report[arm.name] = {where: summarise(arm, used, m["per_batch"]["kl"], m["per_batch"]["teacher_gaps"])
                            for where, m in measured.items()}  # fmt: skip
    return report


def _without_per_batch(measured: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in measured.items() if key != "per_batch"}


def _mean_stats(per_batch: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per layer (the last entry is the final score) mean over batches of each statistic."""
    layers = zip(*per_batch, strict=True)
    return [{key: sum(s[key] for s in layer) / len(per_batch) for key in layer[0]} for layer in map(list, layers)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.probe", description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="DE teacher folder (an export)")
    parser.add_argument("--student", required=True, help="DE student folder (an export)")
    parser.add_argument("--shards", required=True, type=Path, help="training shards with hard negatives")
    parser.add_argument("--dev-shards", type=Path, help="the dev queries' shards, negatives mined the same way")
    parser.add_argument("--out", required=True, type=Path, help="results JSON")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--dev-batches", type=int, default=10, help="dev batches (81 dev queries: 10 of 8)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--k", type=int, default=3, help="LEAD's number of aligned layer pairs")
    parser.add_argument("--query-max-length", type=int, default=32)
    parser.add_argument("--passage-max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chosen", default="mean_dot", choices=sorted(SCORINGS), help="the recipes' layer scoring")
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="NAME=RECIPE",
        help="a LEAD run of the grid: its pairs' step-0 numbers under the chosen scoring (repeat)",
    )
    parser.add_argument("--seeds", default="", help="the arms' seeds, comma-separated (their random draws)")
    parser.add_argument("--steps", type=int, default=0, help="the arms' optimizer steps (their draws over the run)")
    args = parser.parse_args(argv)
    from benchmarks.quality.probe_arms import arm_from_recipe
    from lead_dist.models import load_model

    arms = []
    for spec in args.arm:
        name, _, recipe = spec.partition("=")
        if not name or not recipe:
            parser.error(f"--arm {spec!r}: expected NAME=RECIPE")
        arms.append(arm_from_recipe(name, recipe))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if arms and (not seeds or args.steps < 1):
        parser.error("--arm needs --seeds and --steps (the arms' layer draws depend on both)")
    batches = read_batches(args.shards, args.batches, args.batch_size, args.negatives, args.seed)
    lengths = (args.query_max_length, args.passage_max_length)
    scorings = probe(args.teacher, args.student, batches, lengths, args.k)
    chosen = {"train": scorings[args.chosen]}
    if args.dev_shards is not None:
        dev_batches = read_batches(args.dev_shards, args.dev_batches, args.batch_size, args.negatives, args.seed)
        chosen["dev"] = probe(args.teacher, args.student, dev_batches, lengths, args.k,
                              {args.chosen: SCORINGS[args.chosen]})[args.chosen]  # fmt: skip
    depths = (load_model(args.student, kind="de").num_layers, load_model(args.teacher, kind="de").num_layers)
    payload = {
        "teacher": args.teacher, "student": args.student, "shards": str(args.shards),
        "dev_shards": str(args.dev_shards) if args.dev_shards else None,
        "batches": args.batches, "dev_batches": args.dev_batches if args.dev_shards else 0,
        "batch_size": args.batch_size, "negatives": args.negatives, "lengths": list(lengths),
        "chosen_scoring": args.chosen, "step0_layer_kl_mean": scorings[args.chosen]["aligned"]["random_expected"],
        # each teacher and student layer's ground-truth cross entropy under the chosen scoring (the final score
        # last): for a teacher layer, the gap LEAD re-weights with
        "cross_entropy": {where: {model: [layer["cross_entropy"] for layer in m[model]] for model in ("teacher", "student")}
                          for where, m in chosen.items()},
        "scorings": {name: _without_per_batch(m) for name, m in scorings.items()},
        "dev": _without_per_batch(chosen["dev"]) if "dev" in chosen else None,
        "arms": arms_report(arms, chosen, depths, seeds, args.steps),
        "arm_seeds": seeds, "arm_steps": args.steps,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps({"step0_layer_kl_mean": payload["step0_layer_kl_mean"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
