"""Issue 19's grid (`verdict` in configs/scifact/bench/grid.yaml): its arms, their recipes, the probe's arms, and
the `regimes` block of the results computed by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from benchmarks.quality.plan import PlanError, Regime, load_plan
from benchmarks.quality.summary import REGIME_KEYS, regimes

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "configs" / "scifact" / "bench" / "grid.yaml"
SCIFACT = REPO / "configs" / "scifact"
# the plan checks that the grid's datasets exist (../shared/data in the development checkout)
needs_data = pytest.mark.skipif(
    not (REPO / ".." / "shared" / "data" / "scifact" / "qrels" / "test.tsv").is_file(),
    reason="the grid's datasets (../shared/data/scifact, cranfield) are not here",
)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def _difference(base: str, variant: str) -> dict:
    a, b = (_flat(yaml.safe_load((SCIFACT / name).read_text())) for name in (base, variant))
    a.pop("output_dir"), b.pop("output_dir")
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


@needs_data
def test_verdict_grid_trains_six_arms_for_three_seeds_from_the_same_start() -> None:
    plan = load_plan(GRID, "verdict", REPO)
    assert [spec.name for spec in plan.runs] == [
        "contrastive", "response_de", "lead_de", "lead_de_frozen", "lead_de_last", "lead_de_nolast",
    ]  # fmt: skip
    assert all(spec.seeds == (888, 889, 890) and spec.teacher == "de" for spec in plan.runs)
    full = load_plan(GRID, "full", REPO)
    # the same steps and overrides as the committed grids: only the arms differ
    assert (plan.distill_overrides, plan.warmup_overrides, plan.student_warmup_overrides) == (
        full.distill_overrides, full.warmup_overrides, full.student_warmup_overrides)  # fmt: skip
    assert "lead_de_last" not in {spec.name for spec in full.runs}  # the committed grids keep their runs
    reference = yaml.safe_load((SCIFACT / "lead_de.yaml").read_text())
    for spec in plan.runs:
        recipe = yaml.safe_load(spec.config.read_text())
        for key in ("seed", "data", "train", "student"):
            assert recipe[key] == reference[key], f"{spec.name}: {key} differs from lead_de's"
    assert [r.name for r in plan.regimes] == ["minilm6_de_to_minilm3"]


def test_new_arms_differ_from_lead_de_only_in_their_layer_selection() -> None:
    assert _difference("lead_de.yaml", "bench/lead_de_last.yaml") == {"lead.strategy": ("random", "last")}
    # the student's last block (2) left out: its blocks 0 and 1 against the teacher's 1 and 3 (relative depth 1/3, 2/3)
    assert _difference("lead_de.yaml", "bench/lead_de_nolast.yaml") == {
        "lead.k": (3, 2), "lead.strategy": ("random", "fixed"), "lead.fixed": (None, [[0, 1], [1, 3]]),
    }  # fmt: skip


@needs_data
def test_probe_gets_every_lead_arm_of_the_grid(tmp_path: Path) -> None:
    from benchmarks.quality.__main__ import Layout, probe_argv

    plan = load_plan(GRID, "verdict", REPO)
    argv = probe_argv(plan, Layout(tmp_path, base_model=tmp_path))
    arms = [argv[i + 1].split("=")[0] for i, item in enumerate(argv) if item == "--arm"]
    assert arms == ["lead_de", "lead_de_frozen", "lead_de_last", "lead_de_nolast"]  # not contrastive / response
    assert argv[argv.index("--seeds") + 1] == "888,889,890" and argv[argv.index("--steps") + 1] == "64"
    assert argv[argv.index("--passage-max-length") + 1] == "64"  # the grid's training length, not the recipe's


@needs_data
def test_a_regime_must_name_defined_runs_of_its_teacher(tmp_path: Path) -> None:
    raw = yaml.safe_load(GRID.read_text())
    raw["regimes"]["broken"] = dict(raw["regimes"]["minilm6_de_to_minilm3"], lead="lead_cb")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanError, match=r"regimes.broken.lead: run 'lead_cb' has teacher 'cb', not the regime's 'de'"):
        load_plan(grid, "verdict", REPO)


def test_regimes_by_hand() -> None:
    def run(values: list[float]) -> dict:
        return {"seeds": {str(i): {} for i in range(len(values))},
                "summary": {"scifact": {"ndcg@10": {"mean": sum(values) / len(values)}}}}  # fmt: skip

    students = {"response_x": run([0.5, 0.7]), "lead_x": run([0.6, 0.7, 0.8])}
    teachers = {"x": {"scifact": {"ndcg@10": 0.75}}}
    tests = {"lead_x_vs_response_x": {"p_value": 0.03}}
    regime = Regime("x_to_y", "x", "teacher X", "student Y", "response_x", "lead_x")
    result = regimes([regime], students, teachers, tests)["x_to_y"]
    assert tuple(result) == REGIME_KEYS == (
        "teacher", "student", "teacher_ndcg10", "response_ndcg10", "lead_ndcg10", "lead_minus_response",
        "p_lead_vs_response", "seeds",
    )  # fmt: skip
    assert result["response_ndcg10"] == pytest.approx(0.6) and result["lead_ndcg10"] == pytest.approx(0.7)
    assert result["lead_minus_response"] == pytest.approx(0.1) and result["p_lead_vs_response"] == 0.03
    assert (result["teacher"], result["student"], result["teacher_ndcg10"], result["seeds"]) == (
        "teacher X", "student Y", 0.75, 2)  # fmt: skip


def _evaluation(layout, label: str, ndcg: float) -> None:
    import json

    path = layout.evaluation(label, "dev")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"ndcg@10": ndcg}}))


def test_packaged_teacher_is_used_as_published_only_when_it_beats_the_warmed_student(tmp_path: Path) -> None:
    from benchmarks.quality.commands import Layout, zero_shot_beats_student

    layout = Layout(tmp_path, base_model=tmp_path)
    assert zero_shot_beats_student(layout, "mpnet") is None  # undecided before the two dev evaluations
    _evaluation(layout, "student_warmup", 0.55)
    for teacher, beats in ((0.60, True), (0.50, False), (0.55, False)):  # a tie does not beat the student
        _evaluation(layout, "teacher_mpnet_zeroshot", teacher)
        assert zero_shot_beats_student(layout, "mpnet") is beats


@needs_data
@pytest.mark.parametrize("beats", [True, False])
def test_packaged_teacher_stage_and_its_runs(tmp_path: Path, beats: bool) -> None:
    """The stage's steps in order (dry run), the warm-up only when the zero-shot teacher loses on dev, and every run
    of the teacher reading it from its cache, the 6-layer runs starting from the warmed DE teacher."""
    from benchmarks.quality.commands import Layout, distill_argv
    from benchmarks.quality.packaged import packaged_teachers
    from benchmarks.quality.steps import StepRunner

    plan = load_plan(GRID, "verdict_mpnet_l6", REPO)
    assert list(plan.packaged_teachers) == ["mpnet"] and list(plan.teachers) == ["de"]
    assert [r.name for r in plan.regimes] == ["minilm6_de_to_minilm3", "mpnet_to_minilm3", "mpnet_to_minilm6"]
    layout = Layout(tmp_path, base_model=tmp_path)
    _evaluation(layout, "student_warmup", 0.55)
    _evaluation(layout, "teacher_mpnet_zeroshot", 0.60 if beats else 0.50)
    runner = StepRunner(tmp_path, REPO, dry_run=True, log=lambda _m: None)
    packaged_teachers(runner, plan, layout)
    warmed = [] if beats else ["warmup-mpnet", "eval-teacher_mpnet-dev", "probe-step0-mpnet"]
    assert list(runner.results) == [
        "eval-student_warmup-dev", "eval-teacher_mpnet_zeroshot-dev", "probe-step0-mpnet_zeroshot", *warmed[:2],
        "eval-teacher_mpnet-scifact", *warmed[2:], "probe-step0-mpnet-teacher_de", "cache-teacher-mpnet",
    ]  # fmt: skip
    folder = "sentence-transformers/all-mpnet-base-v2" if beats else os.path.relpath(
        layout.teacher_model("mpnet"), REPO)  # fmt: skip
    for spec in (s for s in plan.runs if s.teacher == "mpnet"):
        argv = distill_argv(plan, layout, spec, 888, layout.student_dir(spec.name, 888))
        assert f"teacher.path={folder}" in argv
        assert f"teacher.cache={os.path.relpath(layout.teacher_cache('mpnet'), REPO)}" in argv
        start = layout.teacher_model("de") if spec.name.endswith("_l6") else layout.student_start
        assert f"student.path={os.path.relpath(start, REPO)}" in argv
