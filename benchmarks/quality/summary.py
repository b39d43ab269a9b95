"""The quality grid's verdict: the top-level `summary` (exactly the keys issue 16 lists), the paired randomization
tests and the contrastive plateau, computed from the per-query test metrics and the dev curves the payload holds.

    summary = {lead_ndcg10, response_ndcg10, contrastive_ndcg10, lead_minus_response, p_lead_vs_response,
               p_lead_vs_contrastive, teacher_ndcg10, student_share_of_teacher, distill_steps, contrastive_plateau,
               step0_layer_kl_mean, seeds}

LEAD, response KD and contrastive are the DE-teacher runs `lead_de` (joint teacher), `response_de` and
`contrastive`; their nDCG@10 is the mean over seeds of the SciFact test nDCG@10. The p-values are two-sided paired
sign-flip tests over the test queries of the per-query nDCG@10 averaged over seeds (lead_dist.retrieval.significance).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.quality.curves import plateau
from lead_dist.retrieval.significance import mean_over_seeds, paired_randomization_test

SUMMARY_KEYS = (
    "lead_ndcg10",
    "response_ndcg10",
    "contrastive_ndcg10",
    "lead_minus_response",
    "p_lead_vs_response",
    "p_lead_vs_contrastive",
    "teacher_ndcg10",
    "student_share_of_teacher",
    "distill_steps",
    "contrastive_plateau",
    "step0_layer_kl_mean",
    "seeds",
)
LEAD, RESPONSE, CONTRASTIVE = "lead_de", "response_de", "contrastive"
REGIME_KEYS = ("teacher", "student", "teacher_ndcg10", "response_ndcg10", "lead_ndcg10", "lead_minus_response",
               "p_lead_vs_response", "seeds")  # fmt: skip
# Besides each regime's LEAD vs response KD: the comparisons the README's tables report, when both runs are there
COMPARISONS = [
    (LEAD, RESPONSE),
    (LEAD, CONTRASTIVE),
    (RESPONSE, CONTRASTIVE),
    ("lead_de_frozen", RESPONSE),
    ("lead_de_frozen", LEAD),
    ("lead_de_last", RESPONSE),
    ("lead_de_last", LEAD),
    ("lead_de_nolast", RESPONSE),
    ("lead_de_nolast", LEAD),
    ("lead_cb", "response_cb"),
    ("lead_ce", "response_ce"),
]


def per_query_means(student: dict[str, Any]) -> dict[str, float]:
    """Per test query nDCG@10 of a run, averaged over its seeds."""
    return mean_over_seeds([record["scifact_per_query_ndcg@10"] for record in student["seeds"].values()])


def paired_tests(students: dict[str, Any], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a_vs_b` -> the paired test of run a against run b (both must be in `students`)."""
    return {f"{a}_vs_{b}": paired_randomization_test(per_query_means(students[a]), per_query_means(students[b]))
            for a, b in pairs if a in students and b in students}  # fmt: skip


def regimes(plan_regimes: list[Any], students: dict[str, Any], teachers: dict[str, Any], tests: dict[str, Any]
            ) -> dict[str, Any]:  # fmt: skip
    """One entry per teacher/student pair (REGIME_KEYS): its LEAD run against its response-KD run, nDCG@10 means
    over seeds, the paired test of the two, and the teacher's own test nDCG@10."""
    result = {}
    for regime in plan_regimes:
        response, lead = students[regime.response], students[regime.lead]
        ndcg = [run["summary"]["scifact"]["ndcg@10"]["mean"] for run in (response, lead)]
        result[regime.name] = {
            "teacher": regime.teacher_label,
            "student": regime.student_label,
            "teacher_ndcg10": teachers[regime.teacher]["scifact"]["ndcg@10"],
            "response_ndcg10": ndcg[0],
            "lead_ndcg10": ndcg[1],
            "lead_minus_response": ndcg[1] - ndcg[0],
            "p_lead_vs_response": tests[f"{regime.lead}_vs_{regime.response}"]["p_value"],
            "seeds": min(len(response["seeds"]), len(lead["seeds"])),
        }
        assert tuple(result[regime.name]) == REGIME_KEYS
    return result


def mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Point-wise mean of curves sampled at the same steps (one per seed)."""
    steps = [[step for step, _v in curve] for curve in curves]
    if any(s != steps[0] for s in steps):
        raise ValueError(f"curves sampled at different steps: {steps}")
    return [(step, statistics.fmean(curve[i][1] for curve in curves)) for i, step in enumerate(steps[0])]


def build_summary(payload: dict[str, Any]) -> dict[str, Any]:
    students = payload["students"]
    missing = [name for name in (LEAD, RESPONSE, CONTRASTIVE) if name not in students]
    if missing:
        return dict.fromkeys(SUMMARY_KEYS) | {"seeds": None}  # a grid without the three DE runs has no verdict
    ndcg = {name: students[name]["summary"]["scifact"]["ndcg@10"]["mean"] for name in (LEAD, RESPONSE, CONTRASTIVE)}
    tests = payload["paired_tests"]
    teacher = payload["teachers"]["de"]["scifact"]["ndcg@10"]
    contrastive_curve = mean_curve([record["dev_curve"] for record in students[CONTRASTIVE]["seeds"].values()])
    summary = {
        "lead_ndcg10": ndcg[LEAD],
        "response_ndcg10": ndcg[RESPONSE],
        "contrastive_ndcg10": ndcg[CONTRASTIVE],
        "lead_minus_response": ndcg[LEAD] - ndcg[RESPONSE],
        "p_lead_vs_response": tests[f"{LEAD}_vs_{RESPONSE}"]["p_value"],
        "p_lead_vs_contrastive": tests[f"{LEAD}_vs_{CONTRASTIVE}"]["p_value"],
        "teacher_ndcg10": teacher,
        "student_share_of_teacher": ndcg[LEAD] / teacher,
        "distill_steps": students[LEAD]["distill_steps"],
        "contrastive_plateau": plateau(contrastive_curve)["plateaued"],
        "step0_layer_kl_mean": (payload.get("probe") or {}).get("step0_layer_kl_mean"),
        "seeds": min(len(students[name]["seeds"]) for name in (LEAD, RESPONSE, CONTRASTIVE)),
    }
    assert tuple(summary) == SUMMARY_KEYS
    return summary
