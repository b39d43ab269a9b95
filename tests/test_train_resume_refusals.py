"""`--resume` against a checkpoint that does not fit, or is damaged (issue 21), through the CLI in one process.

One finished run (checkpoints at steps 2 and 4, an export, a log) is made once; each case works on a copy:
- a teacher built in another width: one line naming the parameter and both shapes, exit code 2;
- a truncated checkpoint and an unreadable COMPLETE: passed over to the one before, said once with the step and why;
- every checkpoint damaged: refused, naming the damage; the export and the log are left as they were;
- other training shards (same names, other content): refused with both digests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_train_loop_helpers as helpers
from test_train_loop_helpers import fresh_accelerate_state  # noqa: F401 (a fixture, used by name)

from lead_dist.cli import main

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 4-step LEAD run (trained teacher) with checkpoints at steps 2 and 4; its config is `config.yaml` beside it."""
    root = tmp_path_factory.mktemp("resume_refusals")
    config = helpers.tiny_config(helpers.shared_shards(tmp_path_factory), root / "run", helpers.minilm_tokenizer(),
                                 train={"max_steps": 4, "save_every": 2})  # fmt: skip
    helpers.write_config(root / "config.yaml", config)
    helpers.reset_accelerate()
    assert main(["train", str(root / "config.yaml")]) == 0
    helpers.reset_accelerate()
    return root / "run"


def _copy(finished_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the finished run and a config that points at it."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    config = (finished_run.parent / "config.yaml").read_text().replace(str(finished_run), str(out))
    (tmp_path / "config.yaml").write_text(config)
    return out, tmp_path / "config.yaml"


def _train(capsys, config: Path, *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["train", str(config), *args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("lead-dist train")]


def test_a_teacher_of_another_width_is_one_line_naming_the_parameter_and_both_shapes(finished_run, tmp_path, capsys):
    out, config = _copy(finished_run, tmp_path)
    code, lines = _train(capsys, config, "teacher.config.hidden_size=64", "--resume", "latest")
    assert code == 2 and len(lines) == 1, lines
    # The first parameter in name order; 48 wide in the checkpoint, 64 in the model the override builds.
    assert lines[0].startswith(
        f"lead-dist train: error: --resume: {out / 'step-000004'}: teacher parameter backbone.embeddings.LayerNorm.bias "
        "has shape [48] in the checkpoint, [64] in the model the config builds ("
    ), lines
    assert "resume with the config the checkpoint was trained with" in lines[0]


def test_a_truncated_checkpoint_and_an_unreadable_complete_are_passed_over_and_said_once(
    finished_run, tmp_path, capsys
):
    out, config = _copy(finished_run, tmp_path)
    weights = out / "step-000004" / "student.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    size = weights.stat().st_size
    code, lines = _train(capsys, config, "train.max_steps=6", "--resume", "latest")
    assert code == 0, lines
    skipped = [line for line in lines if "skipping" in line]
    assert skipped == [
        f"lead-dist train: --resume latest: skipping step 4: {weights} has {size} bytes, COMPLETE records {size + 64} "
        "(truncated)"
    ], lines
    assert json.loads((out / "run.json").read_text())["resumed_from"] == str(out / "step-000002")
    assert weights.stat().st_size == size + 64  # the run saved step 4 again, in place of the damaged one

    helpers.reset_accelerate()
    (out / "step-000006" / "COMPLETE").write_bytes(b"\xff\xfe not json")
    code, lines = _train(capsys, config, "train.max_steps=8", "--resume", "latest")
    assert code == 0, lines
    skipped = [line for line in lines if "skipping" in line]
    assert len(skipped) == 1 and skipped[0].startswith(
        f"lead-dist train: --resume latest: skipping step 6: {out / 'step-000006' / 'COMPLETE'} is unreadable"
    ), skipped
    assert json.loads((out / "run.json").read_text())["resumed_from"] == str(out / "step-000004")


def test_when_every_checkpoint_is_damaged_resume_latest_refuses_and_changes_nothing(finished_run, tmp_path, capsys):
    out, config = _copy(finished_run, tmp_path)
    newest = out / "step-000004" / "student.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    newest.write_bytes(bytes(data))
    (out / "step-000002" / "COMPLETE").unlink()
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    code, lines = _train(capsys, config, "--resume", "latest")
    assert code == 2, lines
    refusal = lines[-1]
    assert refusal.startswith(f"lead-dist train: error: --resume latest: no usable checkpoint in {out} (step 4: ")
    assert (
        f"{newest}: sha256 differs" in refusal and f"step 2: {out / 'step-000002' / 'COMPLETE'} is missing" in refusal
    )
    assert "--overwrite" in refusal
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the export, log.jsonl and run.json are as they were (the lock was released)


def test_a_finished_run_without_checkpoints_is_not_restarted_by_resume_latest(finished_run, tmp_path, capsys):
    out, config = _copy(finished_run, tmp_path)
    for step in ("step-000002", "step-000004"):
        shutil.rmtree(out / step)
    export = (out / "export" / "student" / "model.safetensors").read_bytes()
    code, lines = _train(capsys, config, "--resume", "latest")
    assert code == 2 and "no checkpoint to resume from, but an exported model" in lines[-1], lines
    assert (out / "export" / "student" / "model.safetensors").read_bytes() == export


def test_resume_on_other_shards_is_refused_with_both_digests(finished_run, tmp_path, tmp_path_factory, capsys):
    out, config = _copy(finished_run, tmp_path)
    beir = tmp_path / "beir"
    shutil.copytree(helpers.shared_beir(tmp_path_factory), beir)
    run = beir / "negatives.run"
    run.write_text("".join(run.read_text().splitlines(True)[::2]))  # every other negative: other records
    other = tmp_path / "other-shards"
    subprocess.run([sys.executable, "-m", "lead_dist.cli", "prepare", "--format", "beir", "--input", str(beir),
                    "--out", str(other), "--negatives-run", str(run), "--shards", "4", "--no-corpus"],
                   check=True, env=helpers.base_env(), capture_output=True)  # fmt: skip
    same_names = json.loads((helpers.shared_shards(tmp_path_factory) / "manifest.json").read_text())["shards"]["train"]
    assert [s["name"] for s in json.loads((other / "manifest.json").read_text())["shards"]["train"]] == [
        s["name"] for s in same_names
    ]
    code, lines = _train(capsys, config, f"data.train={other}", "train.max_steps=6", "--resume", "latest")
    assert code == 2 and len(lines) == 1, lines
    assert f"--resume: {out / 'step-000004'} was trained on other shards (digest " in lines[0]
    assert f"than data.train={other} holds now (digest " in lines[0] and "new run" in lines[0]
