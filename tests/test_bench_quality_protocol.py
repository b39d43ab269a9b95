"""The quality protocol's rules (benchmarks/quality/curves.py, summary.py) and the recipes it runs
(configs/scifact/bench/grid.yaml): every method the same steps and batches from the same warmed student, the
one-key variants really differ by one key, and the summary has exactly the keys issue 16 lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.quality.curves import plateau
from benchmarks.quality.plan import load_plan
from benchmarks.quality.summary import SUMMARY_KEYS, build_summary, mean_curve

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "configs" / "scifact" / "bench" / "grid.yaml"


def test_plateau_rule_by_hand() -> None:
    # last step 100: the last quarter is steps 76..100. Best before: 0.500 (step 50); best inside: 0.504 -> +0.004
    assert plateau([(0, 0.40), (25, 0.48), (50, 0.500), (75, 0.499), (100, 0.504)])["plateaued"] is True
    rising = plateau([(0, 0.40), (25, 0.48), (50, 0.500), (75, 0.499), (100, 0.506)])
    assert rising["plateaued"] is False and rising["last_quarter_gain"] == pytest.approx(0.006, abs=1e-12)
    falling = plateau([(0, 0.5), (50, 0.52), (100, 0.47)])  # a drop is a plateau too: nothing left to gain
    assert falling["plateaued"] is True and falling["best_step"] == 50
    assert plateau([(100, 0.5)])["plateaued"] is None  # nothing before the last quarter to compare with


def test_mean_curve_needs_the_same_steps() -> None:
    assert mean_curve([[(0, 0.25), (8, 0.5)], [(0, 0.75), (8, 1.0)]]) == [(0, 0.5), (8, 0.75)]
    with pytest.raises(ValueError, match="different steps"):
        mean_curve([[(0, 0.1)], [(1, 0.1)]])


def _recipe(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_distillation_run_has_the_same_steps_batches_and_start() -> None:
    plan = load_plan(GRID, "full", REPO, check_data=False)  # the recipes, not the data: runs in any clone
    recipes = {spec.name: _recipe(spec.config) for spec in plan.runs}
    same = ("seed", "data", "train", "student")
    reference = recipes["lead_de"]
    for name, recipe in recipes.items():
        for key in same:
            assert recipe[key] == reference[key], f"{name}: {key} differs from lead_de's"
    assert reference["student"]["path"] == "runs/scifact/warmup_student/export/model"
    assert _recipe(plan.student_warmup)["model"]["num_layers"] == 3


@pytest.mark.parametrize(
    ("variant", "base", "difference"),
    [
        ("bench/lead_de_frozen.yaml", "lead_de.yaml", {"teacher.trained": (True, False)}),
        ("bench/lead_de_frozen_last.yaml", "bench/lead_de_frozen.yaml", {"lead.strategy": ("random", "last")}),
        ("bench/lead_de_frozen_skip.yaml", "bench/lead_de_frozen.yaml", {"lead.strategy": ("random", "skip")}),
        ("bench/lead_de_frozen_noreweight.yaml", "bench/lead_de_frozen.yaml", {"lead.reweight": (None, False)}),
        ("response_de.yaml", "lead_de.yaml", {"mode": ("lead", "response")}),
    ],
)
def test_one_key_variants_differ_by_that_key(variant: str, base: str, difference: dict) -> None:
    folder = REPO / "configs" / "scifact"
    a, b = _flat(_recipe(folder / base)), _flat(_recipe(folder / variant))
    a.pop("output_dir"), b.pop("output_dir")
    if variant == "response_de.yaml":  # a response run has no layer selection at all
        a = {k: v for k, v in a.items() if not k.startswith("lead.")}
    changed = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert changed == difference


def test_summary_has_exactly_the_issue_keys_and_hand_computed_values() -> None:
    def run(values_by_seed: list[dict[str, float]], curves: list[list[tuple[int, float]]]) -> dict:
        seeds = {str(888 + i): {"scifact_per_query_ndcg@10": v, "dev_curve": c}
                 for i, (v, c) in enumerate(zip(values_by_seed, curves, strict=True))}  # fmt: skip
        mean = sum(sum(v.values()) / len(v) for v in values_by_seed) / len(values_by_seed)
        return {"seeds": seeds, "summary": {"scifact": {"ndcg@10": {"mean": mean}}}, "distill_steps": 8}

    flat = [[(0, 0.5), (4, 0.5), (8, 0.501)]] * 3
    payload = {
        "students": {
            "lead_de": run([{"a": 0.6, "b": 0.4}] * 3, flat),
            "response_de": run([{"a": 0.5, "b": 0.3}] * 3, flat),
            "contrastive": run([{"a": 0.5, "b": 0.4}] * 3, flat),
        },
        "teachers": {"de": {"scifact": {"ndcg@10": 0.8}}},
        "probe": {"step0_layer_kl_mean": 1.25},
        "paired_tests": {"lead_de_vs_response_de": {"p_value": 0.5}, "lead_de_vs_contrastive": {"p_value": 1.0}},
    }
    summary = build_summary(payload)
    assert tuple(summary) == SUMMARY_KEYS == (
        "lead_ndcg10", "response_ndcg10", "contrastive_ndcg10", "lead_minus_response", "p_lead_vs_response",
        "p_lead_vs_contrastive", "teacher_ndcg10", "student_share_of_teacher", "distill_steps",
        "contrastive_plateau", "step0_layer_kl_mean", "seeds",
    )  # fmt: skip
    assert summary["lead_ndcg10"] == pytest.approx(0.5) and summary["response_ndcg10"] == pytest.approx(0.4)
    assert summary["lead_minus_response"] == pytest.approx(0.1)
    assert summary["student_share_of_teacher"] == pytest.approx(0.625)  # 0.5 / 0.8
    assert (summary["contrastive_plateau"], summary["seeds"], summary["distill_steps"]) == (True, 3, 8)
    assert summary["step0_layer_kl_mean"] == 1.25 and summary["p_lead_vs_contrastive"] == 1.0


def test_the_plan_checks_its_datasets_unless_only_its_structure_is_wanted(tmp_path: Path) -> None:
    """Running a grid needs its data (refused, naming the dataset key, when it is absent); checking the grid's
    structure does not, so a clone without ../shared tests it too."""
    from benchmarks.quality.plan import PlanError

    raw = yaml.safe_load(GRID.read_text())
    raw["datasets"]["train"]["data"] = str(tmp_path / "absent")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanError, match=r"datasets\.train: expected a BEIR folder with qrels/train\.tsv"):
        load_plan(grid, "full", REPO)
    plan = load_plan(grid, "full", REPO, check_data=False)
    assert plan.train.data == tmp_path / "absent" and plan.runs
