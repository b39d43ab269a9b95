"""The layer-capture path of a training step against the same path at another commit (default: main), for BERT.

    nice -n 10 .venv/bin/python -m benchmarks.throughput.capture                 # about 5 minutes on 2 shared cores
    .venv/bin/python -m benchmarks.throughput.capture --ref <commit> --rounds 9

What a LEAD step runs per encoder call and what a change to the backbone code can slow down is
`lead_dist.models.backbone.run_backbone` (hooks on the requested blocks, the backbone's forward) and the tokenizer
flag `uses_token_types`; the rest of the step (pooling, scores, the loss) does not touch it. Both versions run here in
one process on the same weights and inputs: the baseline's backbone.py is read from git (`git show REF:...`) and
loaded as a module of its own. Cells, LEAD layers requested as in the throughput grid:
- `minilm`: all-MiniLM-L6-v2's shape (6 x 384, random weights), 64 passages x 128 tokens, forward + backward with
  layers (1, 3, 5): the compute-bound case of the throughput benchmark's LEAD cells;
- `tiny`: the 2 x 32 BERT of the throughput grid's tiny size, 64 passages x 32 tokens, forward only;
- `overhead`: a 2 x 8 BERT on one 4-token text, 200 calls per round: almost no arithmetic, so what is timed is the
  per-call cost of the capture path itself, the part a change of this code adds or removes (microseconds per call).
Rounds interleave baseline and branch (benchmarks.harness.timing.interleaved_rounds), so load from other users of the shared
machine hits both alike; reported: the median over rounds of branch / baseline examples per second (wall clock) and,
run with `--threads 1`, each version's CPU microseconds per call (this thread's CPU time, robust to the load).
Writes benchmarks/results/<--name>.json (default capture_vs_main).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig

from benchmarks.harness.machine import git, log, machine
from benchmarks.harness.results import write_json
from benchmarks.harness.timing import interleaved_rounds
from lead_dist.models import backbone as branch_backbone

SHAPES = {
    "minilm": {"hidden": 384, "layers": 6, "heads": 12, "tokens": 128, "passages": 64, "calls": 1, "backward": True,
               "capture": (1, 3, 5)},
    "tiny": {"hidden": 32, "layers": 2, "heads": 2, "tokens": 32, "passages": 64, "calls": 1, "backward": False,
             "capture": (0, 1)},
    # almost no arithmetic: what is left is the per-call cost of the capture path itself (hooks, lookups, dispatch)
    "overhead": {"hidden": 8, "layers": 2, "heads": 2, "tokens": 4, "passages": 1, "calls": 200, "backward": False,
                 "capture": (0, 1)},
}  # fmt: skip


def baseline_module(ref: str) -> Any:
    """backbone.py as it is at `ref`, loaded under its own module name (it imports nothing of lead_dist's at main)."""
    source = git("show", f"{ref}:lead_dist/models/backbone.py")
    path = Path(tempfile.mkdtemp()) / "backbone_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("backbone_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["backbone_baseline"] = module
    spec.loader.exec_module(module)
    return module


def make_action(run_backbone: Any, takes_types: Any, model: Any, inputs: dict, shape: dict) -> Any:
    """One timed item = one passage; an action runs `calls` encoder calls of `passages` passages."""

    def action() -> int:
        for _ in range(shape["calls"]):
            token_types = inputs["token_type_ids"] if takes_types(model.config) else None
            args = (model, inputs["input_ids"], inputs["attention_mask"], token_types, shape["capture"])
            if shape["backward"]:
                last, kept = run_backbone(*args)
                (last.mean() + sum(states.mean() for states in kept)).backward()
            else:
                with torch.no_grad():
                    run_backbone(*args)
        return shape["passages"] * shape["calls"]

    return action


def cpu_microseconds_per_call(actions: dict[str, Any], calls: int, rounds: int) -> dict[str, float]:
    """This thread's CPU time per call (time.thread_time, nanosecond clock), each action in turn `rounds` times:
    what the call costs whatever share of a core the shared machine grants (wall time under a load of 10 on 2 cores
    moved by +-50 % from round to round)."""
    spent: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(rounds):
        for name, action in actions.items():
            started = time.thread_time()
            action()
            spent[name].append((time.thread_time() - started) / calls * 1e6)
    medians = {name: round(statistics.median(values), 1) for name, values in spent.items()}
    return medians | {"branch_minus_baseline": round(medians["branch"] - medians["baseline"], 1)}


def measure(name: str, shape: dict, baseline: Any, rounds: int) -> dict[str, Any]:
    config = BertConfig(
        vocab_size=30522, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], intermediate_size=4 * shape["hidden"], max_position_embeddings=512,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # both versions must compute the same function
    )  # fmt: skip
    torch.manual_seed(0)
    model = branch_backbone.build_backbone(config).train(shape["backward"])
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "input_ids": torch.randint(1000, 30000, (shape["passages"], shape["tokens"]), generator=generator),
        "attention_mask": torch.ones(shape["passages"], shape["tokens"], dtype=torch.long),
        "token_type_ids": torch.zeros(shape["passages"], shape["tokens"], dtype=torch.long),
    }
    inputs["attention_mask"][::3, shape["tokens"] // 2 :] = 0  # a third of the rows padded

    def baseline_types(config: Any) -> bool:  # the baseline's `uses_token_types` read its BackboneSpec row
        return baseline.spec_for(config).takes_token_types

    actions = {
        "baseline": make_action(baseline.run_backbone, baseline_types, model, inputs, shape),
        "branch": make_action(branch_backbone.run_backbone, branch_backbone.takes_token_types, model, inputs, shape),
    }
    for action in actions.values():  # warm-up, and the two versions capture the same states
        action()
    with torch.no_grad():
        args = (model, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"], shape["capture"])
        old, new = baseline.run_backbone(*args), branch_backbone.run_backbone(*args)
    same = torch.equal(old[0], new[0]) and all(torch.equal(a, b) for a, b in zip(old[1], new[1], strict=True))
    log(f"{name}: captured states identical in both versions: {same}")
    cpu_us = cpu_microseconds_per_call(actions, shape["calls"], rounds)
    log(f"{name}: CPU microseconds per call, median of {rounds} alternations: {cpu_us}")
    results = interleaved_rounds(actions, rounds, unit="passages")
    per_call = {
        name: [shape["passages"] / rate * 1e6 for rate in result["per_second"]] for name, result in results.items()
    }
    return {"shape": shape, "identical_states": same, "rates": results,
            "microseconds_per_call_median": {name: round(statistics.median(v), 1) for name, v in per_call.items()},
            "cpu_microseconds_per_call_median": cpu_us,
            "branch_over_baseline": results["branch"]["ratio_to_reference_median_of_rounds"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="main", help="the baseline commit (default main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cells", default="minilm,tiny,overhead")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--name", default="capture_vs_main")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    baseline = baseline_module(args.ref)
    ref_commit = git("rev-parse", args.ref)  # the ref resolved: baseline_module has read a file of it
    cells = {name: measure(name, SHAPES[name], baseline, args.rounds) for name in args.cells.split(",")}
    payload = {"baseline_ref": args.ref, "baseline_commit": ref_commit.strip(), "rounds": args.rounds,
               "command": " ".join(sys.argv),
               "cells": cells, "machine": machine()}  # fmt: skip
    path = write_json(args.name, payload)
    for name, cell in cells.items():
        log(f"{name}: branch / baseline passages per second, median of rounds: {cell['branch_over_baseline']}")
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
