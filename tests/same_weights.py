"""Does a refactor keep training bit for bit? Tiny LEAD runs under two source trees, every safetensors byte compared.

    .venv/bin/python tests/same_weights.py REFERENCE_TREE [--deepspeed] [--cases CASE ...] [--work DIR]

REFERENCE_TREE is a checkout of the code before the change (e.g. `git archive main | tar -x -C /tmp/ref`); this
checkout is the other side. Each case runs as `python -m lead_dist.cli train` in a fresh process with PYTHONPATH
set to the tree, on the same prepared demo shards, one thread; then the sha256 of every `*.safetensors` file the
runs wrote (every checkpoint's weights and every export) is compared, file by file. Exit 0 when every file of
every case is byte-identical and both sides wrote the same files, 1 otherwise (each difference is named).

Cases: `lead_joint` (configs/tiny.yaml: a jointly trained teacher, a student cut from it, checkpoints every 2
steps, dropout on), `lead_frozen` (the same with a frozen teacher), `warmup` (one model), and with --deepspeed
`lead_zero` (configs/tiny_zero.yaml: ZeRO-3 teacher, ZeRO-2 student, 2 processes under torchrun, gloo).
Not a pytest test: it needs a second source tree, which a test run does not have.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _config(case: str, shards: Path, out: Path) -> dict:
    source = "tiny_zero.yaml" if case == "lead_zero" else "tiny.yaml"
    config = yaml.safe_load((HERE / "configs" / source).read_text())
    config["output_dir"], config["data"]["train"] = str(out), str(shards)
    for section in ("teacher", "student"):
        if "deepspeed" in config[section]:
            config[section]["deepspeed"] = str(HERE / config[section]["deepspeed"])
    config["teacher"]["config"] |= {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    if case == "lead_frozen":
        config["teacher"]["trained"] = False
    if case == "warmup":
        model = {k: v for k, v in config["teacher"].items() if k != "trained"}
        config = {k: v for k, v in config.items() if k not in ("teacher", "student", "lead", "mode")}
        config |= {"stage": "warmup", "model": model}
    return config


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env["TORCH_EXTENSIONS_DIR"] = str(HERE / ".cache" / "torch_extensions")
    for key in ("ACCELERATE_USE_CPU", "ACCELERATE_USE_DEEPSPEED", "WORLD_SIZE", "LOCAL_RANK", "RANK"):
        env.pop(key, None)
    return env


def run_case(tree: Path, case: str, shards: Path, root: Path) -> dict[str, str]:
    """Train `case` with the code of `tree` under `root`; returns {relative path: sha256} of its safetensors."""
    out = root / "run"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = root / "config.yaml"
    config.write_text(f"# lead-dist train {config}\n" + yaml.safe_dump(_config(case, shards, out), sort_keys=False))
    verb = ["-m", "lead_dist.cli", "train", str(config)]
    if case == "lead_zero":
        command = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29517", *verb]
    else:
        command = [sys.executable, *verb]
    done = subprocess.run(command, env=_env(tree), cwd=tree, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{case} under {tree} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.safetensors"))
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="the source tree before the change")
    parser.add_argument("--deepspeed", action="store_true", help="also the 2-process ZeRO-3/ZeRO-2 case")
    parser.add_argument("--cases", nargs="+", help="only these cases (lead_joint lead_frozen warmup lead_zero)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/same_weights"))
    args = parser.parse_args()
    shards = args.work / "shards"
    if not (shards / "manifest.json").exists():
        prepare = [sys.executable, "-m", "lead_dist.cli", "prepare", "--format", "demo", "--out", str(shards)]
        subprocess.run(prepare, env=_env(HERE), cwd=HERE, check=True, capture_output=True)
    cases = args.cases or ["lead_joint", "lead_frozen", "warmup"] + (["lead_zero"] if args.deepspeed else [])
    same = True
    for case in cases:
        before = run_case(args.reference.resolve(), case, shards, args.work / case / "reference")
        after = run_case(HERE, case, shards, args.work / case / "this")
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        print(f"{case}: {len(before)} safetensors files, {'byte-identical' if not differ else f'DIFFER: {differ}'}")
        same = same and not differ and bool(before)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
