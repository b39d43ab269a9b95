"""`lead-dist cache-teacher CONFIG [key=value ...] --out DIR`: run a distill config's frozen teacher once over
everything its training shards can draw, and store every layer's output (lead_dist/teacher_cache/).

    lead-dist cache-teacher configs/scifact/bench/lead_de_frozen.yaml --out runs/sf-teacher-cache
    torchrun --nproc_per_node 4 -m lead_dist.cli cache-teacher lead.yaml --out cache --dtype bf16   # 4 shares
    lead-dist train configs/scifact/bench/lead_de_frozen.yaml teacher.cache=runs/sf-teacher-cache

Rerun the same command to resume a killed build; a finished cache is left as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lead_dist.verbs.common import check_positive, pick_device, print_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="distill config (YAML) whose teacher is frozen (teacher.trained: false)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, as for train")
    parser.add_argument("--out", required=True, help="cache folder (created; rerun with it to resume)")
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16", help="storage dtype (default fp16)")
    parser.add_argument(
        "--max-gb", type=float, default=50.0, help="refuse when the estimated size exceeds this (default 50 GB)"
    )
    parser.add_argument("--shard-size", type=int, default=4096, help="entries per cache shard (default 4096)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per teacher forward (default 64)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: this rank's GPU if any, else cpu)")


def run(args: argparse.Namespace) -> int:
    """Bad input raises (a config key, the cache folder, --out over an input); `lead_dist.cli` prints one line."""
    from lead_dist.config import ConfigError, load_config

    check_positive(args.batch_size, "--batch-size")
    check_positive(args.shard_size, "--shard-size")
    if not args.max_gb > 0:
        raise ValueError(f"--max-gb must be > 0, got {args.max_gb}")
    config = load_config(args.config, args.overrides)
    if config.stage != "distill" or config.teacher is None:
        raise ConfigError("stage distill with a teacher section is needed (the teacher is what is cached)")
    if config.teacher.trained:
        raise ConfigError("teacher.trained: a trained teacher changes every step and cannot be cached; set it to false")

    from lead_dist.distributed import init_from_env
    from lead_dist.folder_claim import lock_folder, on_main
    from lead_dist.guard import check_apart
    from lead_dist.teacher_cache.build import build_cache
    from lead_dist.train.preflight import config_inputs

    inputs = {key: value for key, value in config_inputs(config, args.config).items() if key != "teacher.cache"}
    check_apart({"--out": args.out}, inputs)
    rank, world = init_from_env()
    lock, created = None, not Path(args.out).exists()
    try:
        # one writer per folder: a second build into it (or a training run's output there) is refused while this runs
        lock = on_main(rank == 0, lambda: lock_folder(args.out, "lead-dist cache-teacher"))
        summary = build_cache(
            config, args.out, dtype=args.dtype, shard_size=args.shard_size, batch_size=args.batch_size,
            max_bytes=int(args.max_gb * 1e9), device=pick_device(args.device), rank=rank, world=world,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )  # fmt: skip
    finally:
        if lock is not None:
            lock.release()
            if created and not any(Path(args.out).iterdir()):  # a refused build leaves no folder behind
                Path(args.out).rmdir()
    print_summary(summary | {"world_size": world}, sort_keys=True)
    return 0
