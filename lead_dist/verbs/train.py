"""`lead-dist train CONFIG [key=value ...] [--resume latest|DIR]`: run under `accelerate launch` or `torchrun`.

The config is loaded and validated on every process before any model, data or process group is touched, so a
mistyped key fails at once with the key, the closest valid name and the file. Examples:

    lead-dist train configs/tiny.yaml train.max_steps=20
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 -m lead_dist.cli \\
        train configs/tiny.yaml --resume latest
    torchrun --nproc_per_node 2 -m lead_dist.cli train configs/tiny_zero.yaml      # DeepSpeed on CPU (gloo)
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config (YAML); its first line names the command that runs it")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.max_steps=100 student.lr=3e-5"
    )
    parser.add_argument(
        "--resume",
        metavar="latest|DIR",
        help="continue from the newest complete checkpoint under output_dir (latest; a fresh start if none) or DIR",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete what output_dir holds and start fresh (refused otherwise)"
    )


def run(args: argparse.Namespace) -> int:
    """Bad input (a config key, the data, a teacher cache, an output_dir over an input) raises; `lead_dist.cli` turns
    it into one line and exit code 2 (the traceback too with --debug)."""
    from lead_dist.config import load_config

    config = load_config(args.config, args.overrides)

    from lead_dist.train.loop import train
    from lead_dist.train.preflight import check_inputs
    from lead_dist.verbs.common import print_summary

    check_inputs(config, args.config)  # before any model is built or output_dir touched
    summary = train(config, resume=args.resume, overwrite=args.overwrite)
    if summary.get("rank", 0) == 0:
        print_summary(summary, sort_keys=True)
    return 0
