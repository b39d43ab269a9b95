"""Running the benchmark's CLI steps: one `lead-dist VERB ...` subprocess per step (or another Python module's,
e.g. the step-0 probe), resumable, logged, timed.

A step that finished writes `<out>/done/<name>.json` (its argv, the sha256 of every recipe file its argv names,
and its wall seconds) after its command exits 0, so a rerun of the benchmark with the same output folder skips it
and reuses its time. A marker whose argv or recipe contents differ from the step's current ones means the grid or
a recipe changed since: the step is refused with what to delete, because mixing the results of two plans in one
table would be silently wrong. (A marker written before recipe hashes were recorded is trusted on its argv alone,
and the log says so.) What a step reads from an earlier step (a teacher it distils) is not hashed: after changing
a teacher's recipe, delete the markers of the runs that use that teacher as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lead_dist.atomic import atomic_write_text

# The environment every step runs in (docs/ENVIRONMENT.md): no model hub, no tokenizer thread pools fighting
# torch's threads, DeepSpeed's JIT ops cached inside the project.
STEP_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
LEAD_DIST = ["-m", "lead_dist.cli"]  # what a step runs unless told otherwise: `python -m lead_dist.cli <argv>`


class StepFailed(RuntimeError):
    """A CLI step exited non-zero; the message names the step, its log file and the log's last lines."""


@dataclass
class StepResult:
    name: str
    seconds: float
    skipped: bool  # finished by an earlier invocation (resume)
    # CPU seconds of the step's process: on a shared machine the wall time depends on the other jobs, the CPU
    # time much less, so it is what a time estimate for another grid or an idle machine should start from.
    cpu_seconds: float | None = None


class StepRunner:
    """Runs steps in order under `out`; `dry_run` prints the commands instead of running them."""

    def __init__(
        self, out: Path, repo_root: Path, *, dry_run: bool = False, log=print, threads: int | None = None
    ) -> None:
        self.out, self.repo_root, self.dry_run, self.log = out, repo_root, dry_run, log
        self.results: dict[str, StepResult] = {}
        self.env = {**os.environ, **STEP_ENV}
        self.threads = threads  # torch threads of a step run alone (None: the environment's choice)
        self._local = threading.local()  # a worker thread's share of the cores while steps run side by side
        self.env.setdefault("TORCH_EXTENSIONS_DIR", str(repo_root / ".cache" / "torch_extensions"))

    def sharing(self, threads: int, task: Callable[[], Any]) -> Any:
        """Run `task` (which runs steps) with each of its steps limited to `threads` torch threads: for steps that
        run side by side, which must share the cores (oversubscribed OpenMP threads slow every step down many
        times). A step's thread count also decides its float reductions' order, so it is fixed by the plan."""
        self._local.threads = threads
        try:
            return task()
        finally:
            del self._local.threads

    def step_env(self) -> dict[str, str]:
        threads = getattr(self._local, "threads", self.threads)
        if threads is None:
            return self.env
        return self.env | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def marker(self, name: str) -> Path:
        return self.out / "done" / f"{name}.json"

    def run(
        self, name: str, argv: list[str], *, fresh_dir: Path | None = None, program: list[str] | None = None
    ) -> StepResult:
        """Run `lead-dist <argv>` (or `python <program> <argv>`) as step `name` unless a marker with the same
        program and argv says it already ran.

        `fresh_dir`: a folder the step writes that must not hold leftovers of an interrupted attempt (the trainer
        appends to its log.jsonl); it is removed before the step runs, except that a `train` step with a complete
        checkpoint there resumes from it (`--resume latest`). It must lie inside the output folder.
        """
        marker = self.marker(name)
        program = program or LEAD_DIST
        recipes = _recipe_digests(self.repo_root, argv)
        if marker.is_file():
            recorded = json.loads(marker.read_text())
            if recorded["argv"] != argv or recorded.get("program", LEAD_DIST) != program:
                raise StepFailed(
                    f"step {name}: {marker} records another command than this plan's:\n  recorded: "
                    f"{' '.join(recorded['argv'])}\n  now:      {' '.join(argv)}\n"
                    f"The plan changed since that run; delete {self.out} (or pass another --out) to start over."
                )
            if "recipes" not in recorded:
                self.log(f"{name}: marker from before recipe hashes were recorded; trusted on its command alone")
            elif recorded["recipes"] != recipes:
                changed = sorted(k for k in recipes.keys() | recorded["recipes"].keys()
                                 if recipes.get(k) != recorded["recipes"].get(k))  # fmt: skip
                raise StepFailed(
                    f"step {name}: recipe(s) {', '.join(changed)} changed since this step ran. Delete {marker} "
                    f"(and the markers of steps that use its output), or delete {self.out} to start over."
                )
            result = StepResult(name, float(recorded["seconds"]), True, recorded.get("cpu_seconds"))
            self.log(f"{name}: done earlier ({result.seconds:.0f} s), skipped")
            self.results[name] = result
            return result
        command = [sys.executable, *program, *argv]
        if self.dry_run:
            print(
                ("lead-dist " if program == LEAD_DIST else f"python {' '.join(program)} ") + " ".join(argv), flush=True
            )
            result = StepResult(name, 0.0, skipped=False)
            self.results[name] = result
            return result
        if fresh_dir is not None and fresh_dir.exists():
            if not fresh_dir.resolve().is_relative_to(self.out.resolve()):
                raise StepFailed(f"step {name}: refusing to clear {fresh_dir}, which is outside {self.out}")
            if argv[0] == "train" and _has_checkpoint(fresh_dir):
                # an interrupted training continues from its last checkpoint: the trainer's resume is exact (same
                # weights, optimizer, data position and RNG as an uninterrupted run), so the results do not change
                self.log(f"{name}: resuming the interrupted training in {fresh_dir} from its latest checkpoint")
                command += ["--resume", "latest"]
            else:
                self.log(f"{name}: clearing {fresh_dir}, left by an interrupted attempt")
                shutil.rmtree(fresh_dir)
        log_file = self.out / "logs" / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log(f"{name}: lead-dist {' '.join(argv)}")
        started = time.perf_counter()
        with open(log_file, "w", encoding="utf-8") as sink:
            returncode, cpu_seconds = _run_and_measure(command, self.repo_root, self.step_env(), sink)
        seconds = time.perf_counter() - started
        if returncode != 0:
            tail = "\n".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
            raise StepFailed(f"step {name} exited {returncode} after {seconds:.0f} s; log {log_file}:\n{tail}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        record = {"argv": argv, "program": program, "recipes": recipes, "seconds": seconds, "cpu_seconds": cpu_seconds}
        atomic_write_text(marker, json.dumps(record, indent=1))  # only whole, and only after the step succeeded
        self.log(f"{name}: {seconds:.0f} s ({cpu_seconds:.0f} CPU s)")
        result = StepResult(name, seconds, False, cpu_seconds)
        self.results[name] = result
        return result


def _has_checkpoint(run_dir: Path) -> bool:
    from lead_dist.train.checkpoint import list_checkpoints

    return bool(list_checkpoints(run_dir))


def _recipe_digests(repo_root: Path, argv: list[str]) -> dict[str, str]:
    """sha256 of each YAML file (a recipe) the argv names, positional or as `key=path`, keyed by its spelling there.
    Outputs are never YAML here (results are JSON), so only inputs are hashed."""
    digests = {}
    for item in argv:
        candidate = item.split("=", 1)[-1]
        if candidate.endswith((".yaml", ".yml")):
            path = Path(candidate) if Path(candidate).is_absolute() else repo_root / candidate
            if path.is_file():
                digests[candidate] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _run_and_measure(command: list[str], cwd: Path, env: dict[str, str], sink: Any) -> tuple[int, float]:
    """Run `command` to its end: (exit code, user + system CPU seconds of that process and the children it waited
    for). Measured on the one child (wait4), so steps that run side by side do not count each other's time."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _pid, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen, so it does not wait again
    return process.returncode, usage.ru_utime + usage.ru_stime
