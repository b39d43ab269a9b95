"""`--report-only --adopt FILE`: per-seed records taken from an earlier results file only when this folder's shared
start reproduces the file's bit for bit, and a seed trained in both must agree bit for bit
(benchmarks/quality/adopt.py)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pytest

from benchmarks.quality import __main__ as quality
from benchmarks.quality.adopt import AdoptError, adoptable_seeds, adopted_records, check_adoption, load_earlier
from benchmarks.quality.commands import Layout
from benchmarks.quality.partial import finished_part
from benchmarks.quality.plan import load_plan

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "configs" / "scifact" / "bench" / "grid.yaml"
needs_data = pytest.mark.skipif(
    not (REPO / ".." / "shared" / "data" / "scifact" / "qrels" / "test.tsv").is_file(),
    reason="the grid's datasets (../shared/data/scifact, cranfield) are not here",
)


def _run_record(value: float) -> dict:
    return {
        "scifact": {"ndcg@10": value, "mrr@10": 0.5, "recall@100": 0.9},
        "cranfield": {"ndcg@10": 0.2, "mrr@10": 0.3, "recall@100": 0.5},
        "scifact_per_query_ndcg@10": {"q1": value, "q2": 1.0 - value},
        "dev_curve": [[0, 0.78], [64, value + 0.1]],
        "steps": 64,
        "train_wall_s": 300.0,
    }


def _earlier() -> dict:
    """A results file as the report writes it, cut to what adoption reads: the shared start, and two runs."""
    return {
        "grid": "verdict_mpnet",
        "settings": {"seeds": [888, 889, 890], "distill_overrides": {"data.passage_max_length": 64}},
        "packaged_minilm": {"dev": {"ndcg@10": 0.6229602717901260}},
        "mining_report": {"queries_mined": 728, "positives_removed": 233},
        "probe": {"cross_entropy": {"train": [1.83, 2.75, 0.73]}, "step0_layer_kl_mean": 1.1257259819656613},
        "teachers": {
            "de": {
                "recipe": "configs/scifact/warmup_de.yaml",
                "dev_curve": [[0, 0.7669], [200, 0.8225]],
                "dev": {"ndcg@10": 0.7056},
                "scifact": {"ndcg@10": 0.6732},
                "cranfield": {"ndcg@10": 0.3805},
                "warmup_wall_s": 4020.6,
            },
        },  # fmt: skip
        "student_warmup": {
            "recipe": "configs/scifact/warmup_student.yaml",
            "dev_curve": [[600, 0.7854]],
            "warmup_steps": 600,
            "warmup_wall_s": 6668.1,
        },  # fmt: skip
        "students": {
            "lead_de": {"seeds": {"888": _run_record(0.60), "889": _run_record(0.61)}},
            "lead_de_last": {"seeds": {"888": _run_record(0.62)}},
        },
    }


def _payload(earlier: dict) -> dict:
    """This folder's report: the same start (other times), lead_de 889 trained again, 888 and lead_de_last adopted."""
    payload = copy.deepcopy({key: earlier[key] for key in earlier if key != "students"})
    payload["teachers"]["de"]["warmup_wall_s"] = 1500.0  # times differ between sittings: not compared
    payload["student_warmup"]["dev_curve"] = [tuple(point) for point in earlier["student_warmup"]["dev_curve"]]
    reproduced = _run_record(0.61) | {"train_wall_s": 480.0}
    payload["students"] = {
        "lead_de": {"seeds": {"888": _run_record(0.60), "889": reproduced, "890": _run_record(0.59)},
                    "adopted_seeds": [888]},
        "lead_de_last": {"seeds": {"888": _run_record(0.62)}, "adopted_seeds": [888]},
    }  # fmt: skip
    return payload


def test_the_same_start_adopts_and_records_the_adopted_and_the_reproduced_seeds() -> None:
    earlier = _earlier()
    record = check_adoption(_payload(earlier), earlier, "old.json")
    assert record["seeds_adopted"] == {"lead_de": [888], "lead_de_last": [888]}
    assert record["seeds_reproduced"] == {"lead_de": [889]}  # 890 is not in the earlier file
    assert record["checked_bit_for_bit"] == [
        "settings", "packaged_minilm", "mining_report", "probe", "teachers.de", "student_warmup",
    ]  # fmt: skip
    assert record["from_grid"] == "verdict_mpnet"
    assert record["new_keys_not_compared"] == []


def test_a_field_the_earlier_report_did_not_have_is_listed_not_compared() -> None:
    earlier = _earlier()
    payload = _payload(earlier)
    payload["mining_report"]["duplicate_judgements"] = 0  # a field later code added to the mining report
    payload["students"]["lead_de"]["seeds"]["889"]["scifact"]["map"] = 0.4
    record = check_adoption(payload, earlier, "old.json")
    assert record["new_keys_not_compared"] == [
        "mining_report.duplicate_judgements", "students.lead_de.seeds.889.scifact.map",
    ]  # fmt: skip
    del payload["mining_report"]["positives_removed"]  # but one the earlier report had must be there, and equal
    with pytest.raises(AdoptError, match=r"mining_report\.positives_removed is 233 there but null"):
        check_adoption(payload, earlier, "old.json")


def test_a_start_that_differs_by_one_ulp_is_refused_naming_the_leaf() -> None:
    earlier = _earlier()
    payload = _payload(earlier)
    payload["probe"]["cross_entropy"]["train"][1] = math.nextafter(2.75, 3.0)
    with pytest.raises(AdoptError, match=r"probe\.cross_entropy\.train\[1\] is 2\.75 there but 2\.75000"):
        check_adoption(payload, earlier, "old.json")


def test_a_teacher_or_student_warmup_that_differs_is_refused() -> None:
    earlier = _earlier()
    payload = _payload(earlier)
    payload["teachers"]["de"]["dev_curve"][1][1] = 0.8226
    with pytest.raises(AdoptError, match=r"teachers\.de\.dev_curve\[1\]\[1\]"):
        check_adoption(payload, earlier, "old.json")
    payload = _payload(earlier)
    payload["student_warmup"]["warmup_steps"] = 599
    with pytest.raises(AdoptError, match=r"student_warmup\.warmup_steps is 600 there but 599"):
        check_adoption(payload, earlier, "old.json")


def test_a_reproduced_seed_that_differs_is_refused() -> None:
    earlier = _earlier()
    payload = _payload(earlier)
    payload["students"]["lead_de"]["seeds"]["889"]["scifact_per_query_ndcg@10"]["q2"] = 0.3
    with pytest.raises(AdoptError, match=r"students\.lead_de\.seeds\.889\.scifact_per_query_ndcg@10\.q2"):
        check_adoption(payload, earlier, "old.json")


@needs_data
def test_adoptable_seeds_are_the_planned_ones_with_every_planned_test_set() -> None:
    plan = load_plan(GRID, "verdict", REPO)  # Cranfield for contrastive/response/lead/frozen, not for last/nolast
    earlier = _earlier()
    earlier["students"]["lead_de"]["seeds"]["777"] = _run_record(0.5)  # a seed the grid does not plan
    del earlier["students"]["lead_de"]["seeds"]["889"]["cranfield"]  # lead_de is evaluated on Cranfield: incomplete
    del earlier["students"]["lead_de_last"]["seeds"]["888"]["cranfield"]  # lead_de_last is not: complete
    earlier["students"]["lead_mpnet"] = {"seeds": {"888": _run_record(0.5)}}  # not a run of this grid
    seeds = adoptable_seeds(earlier, plan)
    assert seeds == {"lead_de": {888}, "lead_de_last": {888}}
    records = adopted_records(earlier, seeds)
    assert records["lead_de"]["888"] is earlier["students"]["lead_de"]["seeds"]["888"]


@needs_data
def test_adopted_seeds_count_as_finished(tmp_path) -> None:
    plan = load_plan(GRID, "verdict", REPO)
    layout = Layout(tmp_path, None)
    for dataset in ("scifact", "cranfield"):
        path = layout.evaluation("lead_de-seed890", dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    cut, record = finished_part(plan, layout, {"lead_de": {888, 889}, "contrastive": {888}})
    assert {spec.name: spec.seeds for spec in cut.runs} == {"contrastive": (888,), "lead_de": (888, 889, 890)}
    assert record["seeds_done"]["lead_de"] == [888, 889, 890]


@needs_data
def test_the_cli_refuses_to_adopt_from_the_file_it_writes_and_adopt_without_report_only(tmp_path, capsys) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "quality_verdict.json").write_text(json.dumps(_earlier()))
    argv = ["--grid", "verdict", "--out", str(tmp_path / "grid"), "--results-dir", str(results), "--report-only"]
    assert quality.main([*argv, "--adopt", str(results / "quality_verdict.json")]) == 2
    assert "is the file this report writes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        quality.parse_args(["--grid", "verdict", "--adopt", str(results / "quality_verdict.json")])
    assert exit_info.value.code == 2


def test_the_earlier_file_is_checked_and_its_bytes_hashed(tmp_path) -> None:
    path = tmp_path / "earlier.json"
    path.write_bytes(json.dumps(_earlier()).encode())
    assert load_earlier(path)["_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text(json.dumps({"grid": "verdict", "students": {}}))
    with pytest.raises(AdoptError, match=r"not a quality benchmark results file \(no teachers, student_warmup"):
        load_earlier(path)
    path.write_text("{")
    with pytest.raises(AdoptError, match="cannot read it as JSON"):
        load_earlier(path)


@needs_data
def test_only_seeds_and_runs_train_those_student_runs_after_the_whole_shared_start(tmp_path) -> None:
    from benchmarks.quality.steps import StepRunner

    plan = load_plan(GRID, "verdict", REPO)
    layout = Layout(tmp_path, base_model=tmp_path)
    everything = StepRunner(tmp_path, REPO, dry_run=True, log=lambda _m: None)
    quality.run_grid(everything, plan, layout, jobs=1)
    subset = StepRunner(tmp_path, REPO, dry_run=True, log=lambda _m: None)
    quality.run_grid(subset, plan, layout, jobs=1, only=quality.Only((889,), ("lead_de", "lead_de_nolast")))
    shared = [name for name in everything.results if not name.startswith(("train-", "eval-")) or "seed" not in name]
    assert "probe-step0" in shared and "warmup-student" in shared
    assert [name for name in subset.results if "seed" in name] == [
        "train-lead_de-seed889", "eval-lead_de-seed889-scifact", "eval-lead_de-seed889-cranfield",
        "train-lead_de_nolast-seed889", "eval-lead_de_nolast-seed889-scifact",
    ]  # fmt: skip
    assert [name for name in subset.results if "seed" not in name] == shared
    assert len([name for name in everything.results if name.startswith("train-")]) == 6 * 3  # six arms, three seeds


@needs_data
def test_only_names_what_the_grid_does_not_plan(tmp_path, capsys) -> None:
    argv = ["--grid", "verdict", "--out", str(tmp_path), "--dry-run", "--only-seeds", "889,891"]
    assert quality.main([*argv, "--only-runs", "lead_de,lead_xx"]) == 2
    assert "grid verdict plans no 891, lead_xx" in capsys.readouterr().err


@needs_data
def test_the_report_takes_a_folder_seed_from_its_files_and_an_adopted_one_as_recorded(tmp_path) -> None:
    from benchmarks.quality.report import _students

    plan = load_plan(GRID, "verdict", REPO)
    spec = next(s for s in plan.runs if s.name == "lead_de_last")  # not evaluated on Cranfield
    plan = dataclasses.replace(plan, runs=[dataclasses.replace(spec, seeds=(888, 889))])
    layout = Layout(tmp_path, None)
    run_dir = layout.student_dir("lead_de_last", 889)
    run_dir.mkdir(parents=True)
    (run_dir / "log.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"event": "eval", "step": 64, "ndcg@10": 0.79}, {"event": "exported", "step": 64})))  # fmt: skip
    evaluation = layout.evaluation("lead_de_last-seed889", "scifact")
    evaluation.parent.mkdir(parents=True)
    metrics = {"ndcg@10": 0.25, "mrr@10": 0.5, "recall@100": 1.0}
    evaluation.write_text(json.dumps({"metrics": metrics, "per_query": {"q1": {"ndcg@10": 0.5}, "q2": {"ndcg@10": 0}}}))
    adopted = {"lead_de_last": {"888": _run_record(0.75), "889": _run_record(0.1)}}  # 889: the folder's wins
    students = _students(plan, {}, layout, {"student_warmup": 0.78}, [], adopted)["lead_de_last"]
    assert students["adopted_seeds"] == [888]
    assert students["seeds"]["888"] is adopted["lead_de_last"]["888"]
    assert students["seeds"]["889"]["scifact"] == metrics
    assert students["seeds"]["889"]["scifact_per_query_ndcg@10"] == {"q1": 0.5, "q2": 0.0}
    assert students["seeds"]["889"]["dev_curve"] == [(0, 0.78), (64, 0.79)]
    assert students["summary"]["scifact"]["ndcg@10"]["mean"] == pytest.approx((0.75 + 0.25) / 2, abs=1e-15)
