"""Which layer pairs each LEAD arm of the grid aligns over its run, and what they weigh at step 0 (issue 19).

The probe (`probe.py`) measures, on a set of batches and before any distillation step, every teacher layer's gap
(its ground-truth cross entropy, untempered: what LEAD re-weights with) and the KL(teacher layer a || student
layer b) of every pair, per batch. An arm (one LEAD recipe) aligns some of those pairs at each step: its layer
schedule (lead_dist.lead.LayerSchedule: strategy, k, fixed pairs, resample_every, the run's seed) over the grid's
steps. This module puts the two together, per arm:

* `draws`: each distinct set of pairs the arm's seeds use, with the steps it is used for;
* `pairs`: each (student, teacher) pair drawn, its share of the arm's steps (over all seeds) and its step-0 KL;
* `kl_mean`: the step-0 KL averaged over the pairs the arm trains with, each weighted by its steps;
* `layer_term`: the step-0 value of LEAD's layer term, sum_k w_k KL_k with w = softmax(-gap / tau_L) (uniform with
  `reweight: false`), computed batch by batch as the loss does, then averaged over batches and the arm's steps.

Everything is arithmetic on measured per-batch numbers: the functions here take plain lists, so that a test can
check them against values computed by hand.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

Pairs = tuple[tuple[int, ...], tuple[int, ...]]  # (student layers, teacher layers), paired by rank


@dataclass(frozen=True)
class Arm:
    """A LEAD recipe's layer selection, as the trainer builds it (lead_dist/train/setup.py `layer_schedule`)."""

    name: str
    strategy: str
    k: int
    resample_every: int
    fixed: tuple[tuple[int, int], ...] | None
    layer_temperature: float
    reweight: bool


def arm_from_recipe(name: str, recipe: str) -> Arm:
    """An arm from a LEAD recipe (its `lead` section); the recipe must be a LEAD run."""
    from lead_dist.config import load_config

    config = load_config(recipe)
    if config.mode != "lead":
        raise ValueError(f"{recipe}: mode {config.mode!r}: only a LEAD recipe aligns layer pairs")
    lead = config.lead
    fixed = tuple((int(s), int(t)) for s, t in lead.fixed) if lead.fixed else None
    return Arm(name, lead.strategy, lead.k, lead.resample_every, fixed, lead.layer_temperature, lead.reweight)


def draws(arm: Arm, student_depth: int, teacher_depth: int, seeds: list[int], steps: int) -> dict[int, Counter]:
    """seed -> Counter of the pairs used at steps 0 .. steps-1 (how many steps each)."""
    from lead_dist.lead import LayerSchedule

    result = {}
    for seed in seeds:
        schedule = LayerSchedule(arm.strategy, student_depth, teacher_depth, arm.k, seed, arm.resample_every,
                                 arm.fixed)  # fmt: skip
        result[seed] = Counter(schedule.at(step) for step in range(steps))
    return result


def layer_weights(gaps: list[float], temperature: float, reweight: bool) -> list[float]:
    """LEAD's pair weights from the drawn teacher layers' gaps: softmax(-gap / tau_L), or 1 each without it."""
    if not reweight:
        return [1.0] * len(gaps)
    top = max(-g / temperature for g in gaps)
    exps = [math.exp(-g / temperature - top) for g in gaps]
    return [e / sum(exps) for e in exps]


def layer_term(pairs: Pairs, kl_batches: list[list[list[float]]], gap_batches: list[list[float]], arm: Arm) -> float:
    """Mean over batches of sum_k w_k KL(teacher t_k || student s_k); kl_batches[i][b][a], gap_batches[i][a]."""
    students, teachers = pairs
    total = 0.0
    for kl, gaps in zip(kl_batches, gap_batches, strict=True):
        weights = layer_weights([gaps[t] for t in teachers], arm.layer_temperature, arm.reweight)
        total += sum(w * kl[s][t] for w, s, t in zip(weights, students, teachers, strict=True))
    return total / len(kl_batches)


def summarise(
    arm: Arm, used: dict[int, Counter], kl_batches: list[list[list[float]]], gap_batches: list[list[float]]
) -> dict[str, Any]:
    """The arm's pairs and step-0 numbers on one set of batches (see the module docstring)."""
    num_batches = len(kl_batches)
    kl_mean_matrix = [[sum(kl[b][a] for kl in kl_batches) / num_batches for a in range(len(kl_batches[0][0]))]
                      for b in range(len(kl_batches[0]))]  # fmt: skip
    total_steps = sum(sum(counter.values()) for counter in used.values())
    pair_steps: Counter = Counter()
    draw_steps: Counter = Counter()
    for counter in used.values():
        for pairs, steps in counter.items():
            draw_steps[pairs] += steps
            for s, t in zip(*pairs, strict=True):
                pair_steps[(s, t)] += steps
    pair_rows = [{"student": s, "teacher": t, "share_of_steps": n / total_steps, "kl": kl_mean_matrix[s][t]}
                 for (s, t), n in sorted(pair_steps.items())]  # fmt: skip
    draw_rows = []
    for pairs, steps in sorted(draw_steps.items()):
        draw_rows.append({"student": list(pairs[0]), "teacher": list(pairs[1]), "share_of_steps": steps / total_steps,
                          "kl": [kl_mean_matrix[s][t] for s, t in zip(*pairs, strict=True)],
                          "layer_term": layer_term(pairs, kl_batches, gap_batches, arm)})  # fmt: skip
    pair_weight = sum(pair_steps.values())
    return {
        "strategy": arm.strategy,
        "k": arm.k,
        "fixed": [list(pair) for pair in arm.fixed] if arm.fixed else None,
        "seeds": {
            str(seed): [{"student": list(p[0]), "teacher": list(p[1]), "steps": n} for p, n in counter.items()]
            for seed, counter in used.items()
        },  # fmt: skip
        "pairs": pair_rows,
        "draws": draw_rows,
        "kl_mean": sum(kl_mean_matrix[s][t] * n for (s, t), n in pair_steps.items()) / pair_weight,
        "layer_term": sum(row["layer_term"] * row["share_of_steps"] for row in draw_rows),
    }
