"""Padding share of a training pass, one padded batch against length-sorted chunks (lead_dist/train/chunking.py).

The share is 1 - real tokens / positions the encoder runs, over every encoder call of a pass over the data (queries
and passages apart), as the trainer collates them (`lead_dist.data.collate_for` with the student's tokenizer).
SciFact: every judged train query once, its first positive and random corpus negatives (benchmarks/harness/fixtures.py
`scifact_examples`); the demo data: `lead-dist prepare --format demo`, streamed like `configs/demo.yaml` trains.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lead_dist.train.chunking import Chunking, plan_chunks

SCIFACT_QUERIES = 800  # of SciFact's 809 judged train queries: 50 batches of 16


def padding_over_batches(
    student: Any, batches: Iterable[list[dict]], lengths: tuple[int, int], chunk_sizes: Sequence[int]
) -> dict[str, Any]:
    """{"queries"|"passages": {"chunk_<n>": padding share}} over the batches; chunk 0 is the one padded batch."""
    from lead_dist.data import collate_for

    real = {"queries": 0, "passages": 0}
    positions = {side: dict.fromkeys(chunk_sizes, 0) for side in real}
    batches_seen = 0
    for examples in batches:
        collated = collate_for(student, examples, *lengths)
        batches_seen += 1
        for side in real:
            mask = collated[side]["attention_mask"]
            real[side] += int(mask.sum())
            for size in chunk_sizes:
                positions[side][size] += sum(len(c.rows) * c.length for c in plan_chunks(mask, Chunking(size)))
    shares = {
        side: {f"chunk_{size}": round(1 - real[side] / positions[side][size], 4) for size in chunk_sizes}
        for side in real
    }
    return shares | {"batches": batches_seen}


def scifact_padding(student: Any, passage_max_length: int, chunk_sizes: Sequence[int]) -> dict[str, Any]:
    from benchmarks.harness.fixtures import scifact_examples

    examples = scifact_examples(SCIFACT_QUERIES, 3)
    batches = [examples[i : i + 16] for i in range(0, len(examples), 16)]
    result = padding_over_batches(student, batches, (32, passage_max_length), chunk_sizes)
    return result | {
        "data": f"SciFact train, {SCIFACT_QUERIES} queries, 16 x (1 + 3) passages a batch, 32/{passage_max_length} tokens"
    }


def demo_padding(student: Any, chunk_sizes: Sequence[int]) -> dict[str, Any]:
    """configs/demo.yaml's pass: 8 queries a batch, no negatives, 24/64 tokens."""
    from lead_dist.cli import main as lead_dist_main
    from lead_dist.data.stream import TrainStream

    with tempfile.TemporaryDirectory(prefix="padding-demo-") as tmp:
        out = Path(tmp) / "shards"
        if lead_dist_main(["prepare", "--format", "demo", "--out", str(out), "--split", "train"]) != 0:
            raise RuntimeError("lead-dist prepare --format demo failed")
        stream = TrainStream(out, batch_size=8, num_negatives=0, seed=888)
        result = padding_over_batches(student, list(stream), (24, 64), chunk_sizes)
    return result | {"data": "demo (lead-dist prepare --format demo), 8 queries x 1 passage, 24/64 tokens"}
