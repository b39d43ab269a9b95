"""`--report-only`: the results of a grid stopped before its last seed keep, per run, only the seeds whose test
evaluations exist, and leave out what has none (benchmarks/quality/partial.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.quality.commands import Layout
from benchmarks.quality.partial import finished_part, finished_steps
from benchmarks.quality.plan import load_plan

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "configs" / "scifact" / "bench" / "grid.yaml"
needs_data = pytest.mark.skipif(
    not (REPO / ".." / "shared" / "data" / "scifact" / "qrels" / "test.tsv").is_file(),
    reason="the grid's datasets (../shared/data/scifact, cranfield) are not here",
)


def _evaluated(layout: Layout, label: str, *datasets: str) -> None:
    for dataset in datasets:
        path = layout.evaluation(label, dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


@needs_data
def test_a_stopped_grid_reports_each_run_over_its_finished_seeds_only(tmp_path) -> None:
    plan = load_plan(GRID, "verdict_mpnet", REPO)
    layout = Layout(tmp_path, None)
    _evaluated(layout, "contrastive-seed888", "scifact", "cranfield")
    _evaluated(layout, "contrastive-seed889", "scifact")  # its Cranfield evaluation is missing: not finished
    _evaluated(layout, "response_de-seed888", "scifact", "cranfield")
    _evaluated(layout, "lead_de-seed888", "scifact", "cranfield")
    _evaluated(layout, "lead_de-seed890", "scifact", "cranfield")
    _evaluated(layout, "lead_de_last-seed888", "scifact")  # not evaluated on Cranfield by the grid: finished
    _evaluated(layout, "response_mpnet-seed888", "scifact")  # its teacher's test evaluation is missing
    for label, value in (("teacher_mpnet_zeroshot", 0.5), ("student_warmup", 0.6)):  # measured before its warm-up
        path = layout.evaluation(label, "dev")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metrics": {"ndcg@10": value}}))
    cut, record = finished_part(plan, layout)
    measured = record["packaged_teachers_measured"]["mpnet"]
    assert (measured["zero_shot_dev"], measured["student_warmup_dev"]) == ({"ndcg@10": 0.5}, {"ndcg@10": 0.6})
    assert measured["probe_cross_entropy"] is None  # no probe file
    assert {spec.name: spec.seeds for spec in cut.runs} == {
        "contrastive": (888,), "response_de": (888,), "lead_de": (888, 890), "lead_de_last": (888,),
    }  # fmt: skip
    assert record["seeds_done"]["lead_de_frozen"] == [] and record["seeds_done"]["response_mpnet"] == []
    assert record["packaged_teachers_left_out"] == ["mpnet"] and cut.packaged_teachers == {}
    assert "mpnet_to_minilm3" in record["regimes_left_out"]
    assert [r.name for r in cut.regimes] == ["minilm6_de_to_minilm3"]  # response_de and lead_de both have a seed
    assert plan.runs[0].seeds == (888, 889, 890)  # the plan itself is not changed


def test_finished_steps_are_read_from_the_markers(tmp_path) -> None:
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "train-x.json").write_text(json.dumps({"argv": ["train"], "seconds": 12.5, "cpu_seconds": 3}))
    (tmp_path / "done" / "eval-y.json").write_text(json.dumps({"argv": ["evaluate"], "seconds": 2}))
    steps = finished_steps(tmp_path)
    assert sorted(steps) == ["eval-y", "train-x"]
    assert (steps["train-x"].seconds, steps["train-x"].cpu_seconds, steps["train-x"].skipped) == (12.5, 3, True)
    assert steps["eval-y"].cpu_seconds is None
