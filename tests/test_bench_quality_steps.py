"""The quality benchmark's step runner: a finished step is skipped on resume; a changed command or a changed recipe
file refuses the resume instead of mixing two plans' results (benchmarks/quality/steps.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.quality.steps import StepFailed, StepRunner


def test_resume_skips_done_steps_and_refuses_changed_commands_or_recipes(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 1\n")
    out = tmp_path / "out"
    logged: list[str] = []
    runner = StepRunner(out, tmp_path, log=logged.append)
    argv = ["--help", str(recipe), "--out", str(tmp_path / "result.json")]  # `lead-dist --help` exits 0
    first = runner.run("step", argv)
    assert not first.skipped and runner.marker("step").is_file()

    again = StepRunner(out, tmp_path, log=logged.append).run("step", argv)
    assert again.skipped and again.seconds == pytest.approx(first.seconds)

    with pytest.raises(StepFailed, match="records another command"):
        StepRunner(out, tmp_path, log=logged.append).run("step", [*argv, "--quiet"])

    recipe.write_text("seed: 2\n")
    with pytest.raises(StepFailed, match=r"recipe\(s\) .*recipe.yaml changed"):
        StepRunner(out, tmp_path, log=logged.append).run("step", argv)


def test_a_failing_step_leaves_no_marker_and_names_its_log(tmp_path: Path) -> None:
    runner = StepRunner(tmp_path / "out", tmp_path, log=lambda _m: None)
    with pytest.raises(StepFailed, match=r"step bad exited 2 .*logs/bad.log"):
        runner.run("bad", ["no-such-verb"])
    assert not runner.marker("bad").exists()


def test_a_step_may_run_another_python_module_and_a_changed_program_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    marker_file = tmp_path / "ran.txt"
    program = ["-c", f"import pathlib, sys; pathlib.Path({str(marker_file)!r}).write_text(' '.join(sys.argv[1:]))"]
    runner = StepRunner(out, tmp_path, log=lambda _m: None)
    assert not runner.run("probe", ["a", "b"], program=program).skipped
    assert marker_file.read_text() == "a b"  # the program ran with the step's argv
    assert StepRunner(out, tmp_path, log=lambda _m: None).run("probe", ["a", "b"], program=program).skipped
    with pytest.raises(StepFailed, match="records another command"):
        StepRunner(out, tmp_path, log=lambda _m: None).run("probe", ["a", "b"])  # now as a lead-dist verb


def test_an_interrupted_training_resumes_from_its_checkpoint_and_other_leftovers_are_cleared(tmp_path: Path) -> None:
    import json

    from lead_dist.train.checkpoint import COMPLETE_MARKER

    out = tmp_path / "out"
    recorded = tmp_path / "argv.txt"
    program = ["-c", f"import pathlib, sys; pathlib.Path({str(recorded)!r}).write_text(' '.join(sys.argv[1:]))"]
    run_dir = out / "students" / "run"
    checkpoint = run_dir / "step-000050"
    checkpoint.mkdir(parents=True)
    (checkpoint / "weights").write_bytes(b"w")
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps({"step": 50, "files": {"weights": 1}}))
    runner = StepRunner(out, tmp_path, log=lambda _m: None)
    runner.run("train-run", ["train", "recipe.yaml"], fresh_dir=run_dir, program=program)
    assert recorded.read_text() == "train recipe.yaml --resume latest" and checkpoint.is_dir()
    assert json.loads(runner.marker("train-run").read_text())["argv"] == ["train", "recipe.yaml"]  # as planned

    (checkpoint / "weights").write_bytes(b"torn")  # no complete checkpoint left: start over from an empty folder
    runner.run("train-other", ["train", "other.yaml"], fresh_dir=run_dir, program=program)
    assert recorded.read_text() == "train other.yaml" and not run_dir.exists()


def test_steps_side_by_side_are_timed_apart(tmp_path: Path) -> None:
    """Each step's CPU seconds are its own process's, not those of a step that finished beside it."""
    from concurrent.futures import ThreadPoolExecutor

    runner = StepRunner(tmp_path / "out", tmp_path, log=lambda _m: None)
    sleeper = ["-c", "import time; time.sleep(2.0)"]
    burner = ["-c", "import time\nwhile time.process_time() < 1.0: pass"]  # at least 1 CPU second
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(runner.sharing, 1, lambda: runner.run("sleep", ["a"], program=sleeper))
        busy = pool.submit(runner.sharing, 1, lambda: runner.run("burn", ["b"], program=burner))
        sleep_result, burn_result = slow.result(), busy.result()
    assert burn_result.cpu_seconds >= 1.0
    assert sleep_result.cpu_seconds < 0.9  # interpreter start-up only; the burner's second would push it past 1
