"""Every run config and launch file starts with the exact command that uses it, and that command holds up:
the config it names is this file and loads (with the command's overrides) through lead_dist.config, the launch
files it names exist, the `lead-dist prepare` steps it names parse, and every DeepSpeed JSON is accepted by
DeepSpeed once its "auto" values are filled."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from lead_dist.config import load_config

REPO = Path(__file__).resolve().parents[1]
# Benchmark plans (grid.yaml: which recipes a benchmark runs, and the sizes it sets) are not run configs.
GRIDS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("grid.yaml"))
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml") if p.name != "grid.yaml")
ACCELERATE_YAMLS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "launch" / "accelerate").glob("*.yaml"))
DEEPSPEED_JSONS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "launch" / "deepspeed").glob("*.json"))
SLURM_SCRIPTS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "launch" / "slurm").glob("*.sbatch"))


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # commands and configs name paths relative to the repository root, as a user types them there
    monkeypatch.chdir(REPO)


def _first_comment(path: str) -> str:
    lines = Path(REPO / path).read_text().splitlines()
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    assert lines and lines[0].startswith("# "), f"{path}: must start with a '# <command>' line"
    return lines[0][2:].strip()


def _steps(command: str) -> list[list[str]]:
    """Split `A && B` into argv lists, dropping leading VAR=value environment assignments."""
    steps = []
    for part in command.split("&&"):
        argv = shlex.split(part)
        while argv and "=" in argv[0] and not argv[0].startswith("-"):
            argv = argv[1:]
        steps.append(argv)
    return steps


def _train_call(argv: list[str]) -> tuple[str, list[str], str | None] | None:
    """(config, overrides, accelerate --config_file) of a `lead-dist train` / `-m lead_dist.cli train` step."""
    if argv[0] == "lead-dist":
        rest = argv[1:]
    elif "lead_dist.cli" in argv:
        rest = argv[argv.index("lead_dist.cli") + 1 :]
    else:
        return None
    if not rest or rest[0] != "train":
        return None
    from lead_dist.verbs.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(rest[1:])
    launcher_config = argv[argv.index("--config_file") + 1] if "--config_file" in argv else None
    return args.config, list(args.overrides), launcher_config


def _check_prepare(argv: list[str]) -> None:
    from lead_dist.verbs.prepare import add_arguments

    parser = argparse.ArgumentParser(prog="lead-dist prepare", exit_on_error=False)
    add_arguments(parser)
    parser.parse_args(argv[2:])  # raises on an unknown or malformed option


def _train_calls(command: str) -> list[tuple[str, list[str], str | None]]:
    calls = []
    for argv in _steps(command):
        if argv[:2] == ["lead-dist", "prepare"]:
            _check_prepare(argv)
            continue
        call = _train_call(argv)
        assert call is not None, f"not a lead-dist prepare/train step: {shlex.join(argv)}"
        calls.append(call)
    assert len(calls) == 1, f"expected exactly one train step in {command!r}"
    return calls


@pytest.mark.parametrize("path", CONFIGS)
def test_config_starts_with_the_command_that_runs_it_and_loads(path: str) -> None:
    command = _first_comment(path)
    ((config_path, overrides, launcher_config),) = _train_calls(command)
    assert config_path == path, f"{path}: its command trains {config_path}"
    if launcher_config is not None:
        assert launcher_config in ACCELERATE_YAMLS, f"{path}: unknown accelerate config {launcher_config}"
    config = load_config(path, overrides)
    assert config.output_dir.startswith("runs/"), f"{path}: output_dir should live under runs/ (git-ignored)"
    for section in (config.student, config.teacher, config.model):
        if section is not None and section.deepspeed is not None:
            assert section.deepspeed in DEEPSPEED_JSONS
        if section is not None and section.kind == "ce" and config.mode != "contrastive":
            # a cross encoder only sees its own query's passages: with no negatives its softmax has one entry
            assert config.data.num_negatives >= 1, f"{path}: a cross encoder needs data.num_negatives >= 1"


@pytest.mark.parametrize("path", CONFIGS)
def test_data_preparation_commands_in_the_comments_parse(path: str) -> None:
    comments = [line for line in (REPO / path).read_text().splitlines() if line.startswith("#")]
    commands = [m.group(0) for line in comments for m in re.finditer(r"lead-dist prepare [^()]*?(?=\s{2,}|&&|$)", line)]
    for command in commands:
        _check_prepare(shlex.split(command))
    if not path.startswith("configs/msmarco/warmup_de"):
        assert commands, f"{path}: say how its data.train shards are prepared"


@pytest.mark.parametrize("path", GRIDS)
@pytest.mark.parametrize("grid", ["quick", "full"])
def test_benchmark_grid_names_its_script_and_every_run_loads(path: str, grid: str) -> None:
    script = _steps(_first_comment(path))[0]
    assert script[0].endswith("python") and script[1] == "-m", f"{path}: first line must run a benchmark module"
    module = REPO / script[2].replace(".", "/")
    assert (module / "__main__.py").is_file() or module.with_suffix(".py").is_file(), f"{path}: no module {script[2]}"
    from benchmarks.quality.plan import load_plan

    plan = load_plan(path, grid, REPO, check_data=False)  # the grid's structure: checked in any clone
    assert plan.runs, f"{path}: grid {grid} runs nothing"
    overrides = [f"{key}={value}" for key, value in plan.distill_overrides.items()]
    for run in plan.runs:
        assert load_config(run.config, [*overrides, f"output_dir=runs/{run.name}"]).stage == "distill"
    warmup_overrides = [f"{key}={value}" for key, value in plan.warmup_overrides.items()]
    for recipe in plan.teachers.values():
        assert load_config(recipe, warmup_overrides).stage == "warmup"


def test_every_kind_of_recipe_is_there() -> None:
    expected = {
        "configs/demo.yaml",
        "configs/tiny.yaml",
        *(f"configs/msmarco/warmup_{m}.yaml" for m in ("de6", "de12", "cb12", "cb24", "ce12")),
        *(f"configs/msmarco/lead_{r}.yaml" for r in ("cb12_to_de6", "cb24_to_de12", "de12_to_de6", "ce12_to_de6")),
        *(f"configs/scifact/{m}_{k}.yaml" for m in ("warmup", "lead", "response") for k in ("de", "cb", "ce")),
        "configs/scifact/contrastive.yaml",
    }
    assert expected <= set(CONFIGS), expected - set(CONFIGS)
    # the recipes follow LEAD_SPEC section 8 where it fixes a value
    for name in ("cb12_to_de6", "cb24_to_de12", "de12_to_de6", "ce12_to_de6"):
        config = load_config(f"configs/msmarco/lead_{name}.yaml")
        assert (config.seed, config.lead.k, config.lead.temperature, config.lead.layer_temperature) == (888, 5, 1, 10)
        assert config.lead.resample_every == 10 and config.train.mixed_precision == "no"
        assert config.teacher.lr == (2e-5 if config.teacher.kind == "cb" else 5e-5)
        assert config.teacher.candidates == ("group" if config.teacher.kind == "ce" else "global")
        assert config.train.max_steps == (100_000 if config.teacher.kind == "ce" else 50_000)


@pytest.mark.parametrize("path", ACCELERATE_YAMLS)
def test_accelerate_config_starts_with_its_command(path: str) -> None:
    command = _first_comment(path)
    ((config_path, overrides, launcher_config),) = _train_calls(command)
    assert launcher_config == path
    load_config(config_path, overrides)
    launch = yaml.safe_load((REPO / path).read_text())
    assert launch["compute_environment"] == "LOCAL_MACHINE"
    assert launch["num_processes"] >= launch["num_machines"] >= 1


def _filled(ds: dict) -> dict:
    """What the trainer hands DeepSpeed: '_' comment keys stripped, 'auto' replaced by run-config values."""
    fill = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "gradient_clipping": 2.0}
    out = {k: fill.get(k, v) for k, v in ds.items() if not k.startswith("_")}
    out.update({"bf16": {"enabled": False}, "fp16": {"enabled": False}})
    return out


@pytest.mark.parametrize("path", DEEPSPEED_JSONS)
def test_deepspeed_json_names_its_command_and_deepspeed_accepts_it(path: str) -> None:
    raw = (REPO / path).read_text()
    ds = json.loads(raw)
    assert next(iter(ds)) == "_command", f"{path}: the first key must be _command"
    ((config_path, overrides, _launcher),) = _train_calls(ds["_command"])
    config = load_config(config_path, overrides)
    used = {s.deepspeed for s in (config.student, config.teacher, config.model) if s is not None}
    assert path in used, f"{path}: its _command runs {config_path}, which does not use it"
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert ds[key] == "auto", f"{path}: {key} must be 'auto' (the run config is the one source of truth)"
    assert "optimizer" not in ds and "scheduler" not in ds

    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig(_filled(ds))
    assert parsed.zero_optimization_stage == ds["zero_optimization"]["stage"]


@pytest.mark.parametrize("path", SLURM_SCRIPTS)
def test_slurm_script_names_its_command_and_is_valid_bash(path: str) -> None:
    argv = shlex.split(_first_comment(path))
    assert argv[0] == "sbatch" and path in argv
    config_path = argv[argv.index(path) + 1]
    load_config(config_path, argv[argv.index(path) + 2 :])
    subprocess.run(["bash", "-n", str(REPO / path)], check=True)


def test_launch_readme_names_every_launch_file() -> None:
    readme = (REPO / "launch" / "README.md").read_text()
    for path in ACCELERATE_YAMLS + DEEPSPEED_JSONS + SLURM_SCRIPTS:
        assert Path(path).relative_to("launch").as_posix() in readme, f"launch/README.md does not mention {path}"


_WORLD = textwrap.dedent(
    """
    from accelerate import Accelerator
    accelerator = Accelerator()
    print(f"world {accelerator.process_index} {accelerator.num_processes}", flush=True)
    """
)


@pytest.mark.multiprocess
def test_cpu_two_process_launch_config_starts_two_ranks_that_see_each_other(tmp_path: Path) -> None:
    script = tmp_path / "world.py"
    script.write_text(_WORLD)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    accelerate = Path(sys.executable).with_name("accelerate")
    result = subprocess.run(
        [str(accelerate), "launch", "--config_file", "launch/accelerate/cpu_2proc.yaml", "--main_process_port",
         "29517", str(script)],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # the two ranks print concurrently, so their lines may interleave
    assert sorted(re.findall(r"world (\d+) (\d+)", result.stdout)) == [("0", "2"), ("1", "2")], result.stdout
