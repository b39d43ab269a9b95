"""The training loop in one process (world size 1): non-finite steps, gradient accumulation, every teacher kind and
the warm-up stage, run in-process on tiny random BERTs. Multi-process behaviour is in test_train_zero/resume/
multinode/loop_faults."""

from __future__ import annotations

import json
import math

import pytest
import test_train_loop_helpers as helpers
from rounding import assert_adam_runs_agree, noisy_share
from test_train_loop_helpers import fresh_accelerate_state  # noqa: F401 (a fixture, used by name)

from lead_dist.cli import main
from lead_dist.config import config_from_dict
from lead_dist.train.loop import train

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _events(output_dir, name):
    lines = (output_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == name]


def _warmup_config(tmp_path, tmp_path_factory, data=None, **train):
    config = helpers.tiny_config(
        helpers.shared_shards(tmp_path_factory), tmp_path / "run", helpers.minilm_tokenizer(), stage="warmup"
    )
    config["model"] = config.pop("student")
    del config["teacher"], config["mode"], config["lead"]
    config["train"] = {**config["train"], "max_steps": 5, "warmup_ratio": 0.0, **train}
    config["data"] = {**config["data"], **(data or {})}
    config["model"] |= {"pooling": "mean", "similarity": "cos"}  # scores that differ from the first step on
    return config_from_dict(config)


def test_nonfinite_steps_are_skipped_counted_and_logged(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LEAD_DIST_TEST_NAN_AT_STEPS", "1,2")  # 0-based: the 2nd and 3rd optimizer steps
    config = _warmup_config(tmp_path, tmp_path_factory, max_nonfinite_in_row=3)
    summary = train(config)
    out = tmp_path / "run"

    assert summary["world_size"] == 1 and summary["steps"] == 5 and summary["nonfinite_total"] == 2
    assert [(e["step"], e["in_row"]) for e in _events(out, "nonfinite_loss")] == [(2, 1), (3, 2)]
    records = helpers.step_records(out)
    assert [r["loss"]["total"] == "nan" for r in records] == [False, True, True, False, False]
    # A skipped step does not step the optimizer or the schedule: LR = 1e-3 * (5 - optimizer steps taken) / 5.
    lrs = [r["lr"]["model"] for r in records]
    assert lrs == pytest.approx([1e-3, 0.8e-3, 0.8e-3, 0.8e-3, 0.6e-3])
    assert [bool(r["grad_norm"]) for r in records] == [True, False, False, True, True]
    assert (out / "export" / "model").is_dir()


def test_too_many_nonfinite_steps_in_a_row_abort(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LEAD_DIST_TEST_NAN_AT_STEPS", "1,2,3")
    config = _warmup_config(tmp_path, tmp_path_factory, max_nonfinite_in_row=3)
    with pytest.raises(FloatingPointError, match=r"3 steps in a row.*train.max_nonfinite_in_row=3"):
        train(config)
    assert not (tmp_path / "run" / "export").exists()


def test_a_run_ending_in_nonfinite_losses_names_the_terms_exits_1_and_exports_nothing(
    tmp_path, tmp_path_factory, monkeypatch, capsys
):
    """Issue 21: NaN from a frozen teacher (as from a damaged cache) in the last 2 of 3 steps, under the limit of 5:
    the run used to export its student. It now ends with one line naming the terms that went non-finite first,
    exit code 1, and no export; the log shows each term as it was."""
    monkeypatch.setenv("LEAD_DIST_TEST_NAN_AT_STEPS", "1,2")
    monkeypatch.setenv("LEAD_DIST_TEST_NAN_IN", "teacher")
    out = tmp_path / "run"
    config = helpers.tiny_config(helpers.shared_shards(tmp_path_factory), out, helpers.minilm_tokenizer(),
                                 teacher={"trained": False}, train={"max_steps": 3})  # fmt: skip
    capsys.readouterr()
    code = main(["train", str(helpers.write_config(tmp_path / "nan.yaml", config))])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lead-dist train")]
    assert code == 1 and len(lines) == 1, lines
    # The teacher's outputs feed the response and layer terms only: the student's contrastive term stays finite.
    assert lines[0] == (
        "lead-dist train: error: the last 2 steps of the run had a non-finite loss (steps 2-3); first non-finite at "
        "step 2: response, response_forward, layers, layer_kl/0, layer_kl/1; nothing exported: lower the learning "
        "rates, enable gradient clipping or check the data (and teacher.cache)"
    )
    assert not (out / "export").exists()
    records = helpers.step_records(out)
    assert [r["loss"]["response"] for r in records][1:] == ["nan", "nan"] and math.isfinite(
        records[0]["loss"]["response"]
    )
    assert all(math.isfinite(r["loss"]["student"]) for r in records)
    assert [e["terms"][0] for e in _events(out, "nonfinite_loss")] == ["response", "response"]


def test_gradient_accumulation_equals_the_larger_batch_when_nothing_crosses_queries(tmp_path, tmp_path_factory):
    """With own-group candidates and response distillation each query's loss depends on its own passages only, so
    2 micro-batches of 2 queries give the gradient of 1 batch of 4 (and, with accumulation, a warning that it
    adds no negatives: here it would have changed nothing, in LEAD's global candidate set it does)."""
    results = {}
    for name, batch_size, grad_accum in (("batch4", 4, 1), ("accum2x2", 2, 2)):
        config = helpers.tiny_config(
            helpers.shared_shards(tmp_path_factory),
            tmp_path / name,
            helpers.minilm_tokenizer(),
            mode="response",
            # cosine scores (scale 20): a random student's scores differ enough for gradients well above rounding
            student={"pooling": "mean", "similarity": "cos"},
            teacher={"candidates": "group", "similarity": "cos"},
            train={"batch_size": batch_size, "grad_accum": grad_accum, "max_steps": 3},
        )
        if grad_accum > 1:
            with pytest.warns(UserWarning, match="adds no negatives"):
                train(config_from_dict(config))
        else:
            train(config_from_dict(config))
        helpers.reset_accelerate()
        results[name] = tmp_path / name
    batch4, accum = helpers.step_records(results["batch4"]), helpers.step_records(results["accum2x2"])
    # Same loss at every step (so the same updates in between) and the same gradient norms before clipping.
    assert [r["loss"]["total"] for r in accum] == pytest.approx([r["loss"]["total"] for r in batch4], abs=1e-5)
    for role in ("student", "teacher"):
        norms4 = [r["grad_norm"][role] for r in batch4]
        assert [r["grad_norm"][role] for r in accum] == pytest.approx(norms4, rel=1e-4)
        expected = helpers.exported_weights(results["batch4"], role)
        got = helpers.exported_weights(results["accum2x2"], role)
        # The two runs sum each gradient in another order, so their gradients differ by float32 rounding, and AdamW
        # (a step of lr * m / (sqrt(v) + 1e-8), whatever the gradient's scale) turns that into a whole step's worth
        # where a gradient entry is within rounding of zero: seen on teacher layer 2 output.dense.weight[42, 15],
        # gradient 9.3e-10 in one run and 9.5e-9 in the other (against 1.2e-2 in its largest entries), weights
        # 5e-5 apart after 3 steps here (beyond 1e-4 on the machine of issue 15). Bounds propagated through the
        # update in tests/rounding.py. A weight's gradient sums one term per token of the step, 4 x 16 + 16 x 24,
        # so up to 0.43% of the entries may sit that close to zero (0.25% to 0.34% measured against float64).
        learning_rates = [r["lr"][role] for r in batch4]
        assert_adam_runs_agree(got, expected, learning_rates, noisy_share(4 * 16 + 16 * 24), what=role)
    losses = [r["loss"]["total"] for r in batch4]
    assert max(losses) - min(losses) > 1e-3, "the models did train"


@pytest.mark.parametrize("teacher_kind", ["cb", "ce"])
def test_lead_with_colbert_and_cross_encoder_teachers(tmp_path, tmp_path_factory, teacher_kind):
    teacher = {"kind": teacher_kind, "pooling": None}
    if teacher_kind == "cb":
        teacher["projection_dim"] = 16
    config = helpers.tiny_config(
        helpers.shared_shards(tmp_path_factory),
        tmp_path / "run",
        helpers.minilm_tokenizer(),
        teacher=teacher,
        lead={"k": 2, "strategy": "last"},
        train={"max_steps": 2},
    )
    summary = train(config_from_dict(config))
    records = helpers.step_records(tmp_path / "run")
    assert summary["steps"] == 2 and len(records) == 2
    # strategy last, K=2: student layers (0, 1) of 2, teacher layers (1, 2) of 3, one weight per pair.
    assert records[0]["layers"]["student"] == [0, 1] and records[0]["layers"]["teacher"] == [1, 2]
    assert len(records[0]["layers"]["weights"]) == 2
    assert all(math.isfinite(r["loss"]["layers"]) and r["loss"]["layers"] > 0 for r in records)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["teacher"]["candidates"] == ("group" if teacher_kind == "ce" else "global")
    assert sorted(p.name for p in (tmp_path / "run" / "export").iterdir()) == ["student", "teacher"]


def test_warmup_of_a_cross_encoder(tmp_path, tmp_path_factory):
    config = _warmup_config(tmp_path, tmp_path_factory, max_steps=2)
    config.model.kind, config.model.candidates = "ce", "group"
    config.model.pooling = config.model.similarity = None
    summary = train(config)
    records = helpers.step_records(tmp_path / "run")
    assert summary["steps"] == 2
    # Own-group contrastive over 1 + 3 passages: a random model starts near ln(4).
    assert records[0]["loss"]["contrastive"] == pytest.approx(math.log(4), abs=0.3)
    assert "layers" not in records[0]


def test_in_training_evaluation_is_logged_and_leaves_training_unchanged(tmp_path, tmp_path_factory):
    beir = helpers.shared_beir(tmp_path_factory)
    plain = _warmup_config(tmp_path / "plain", tmp_path_factory, max_steps=4)
    train(plain)
    helpers.reset_accelerate()
    dev = {"dev": str(beir), "dev_split": "dev", "dev_max_queries": 10}
    evaluated = _warmup_config(tmp_path / "evaluated", tmp_path_factory, data=dev, max_steps=4, eval_every=2)
    train(evaluated)

    events = _events(tmp_path / "evaluated" / "run", "eval")
    assert [e["step"] for e in events] == [2, 4]
    for event in events:
        assert 0.0 <= event["ndcg@10"] <= 1.0 and 0.0 <= event["mrr@10"] <= 1.0
        # k = the whole 160-passage corpus, so every relevant passage is retrieved somewhere.
        assert event["recall@1000"] == 1.0
    # Evaluation draws no random numbers and restores train mode: the training trajectory is the same.
    assert helpers.losses(tmp_path / "evaluated" / "run") == helpers.losses(tmp_path / "plain" / "run")


def test_mixed_precision_runs_close_to_fp32(tmp_path, tmp_path_factory):
    """bf16 autocast, and fp16 autocast with a gradient scaler shared by student and teacher."""
    runs = {}
    for precision in ("no", "bf16", "fp16"):
        config = helpers.tiny_config(
            helpers.shared_shards(tmp_path_factory),
            tmp_path / precision,
            helpers.minilm_tokenizer(),
            train={"max_steps": 2, "mixed_precision": precision},
        )
        train(config_from_dict(config))
        helpers.reset_accelerate()
        runs[precision] = helpers.losses(tmp_path / precision)
    for precision in ("bf16", "fp16"):
        # Autocast really ran in low precision (the first loss, before any update, already differs) ...
        assert runs[precision][0] != runs["no"][0]
        # ... and stays within low-precision rounding of the fp32 run.
        assert runs[precision] == pytest.approx(runs["no"], abs=0.05)
