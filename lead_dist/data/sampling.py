"""Per-epoch drawing of one positive and n negatives for an example, seeded by (seed, epoch, query id).

Keying the draw on the query id (not on the rank, worker or position that happens to read the example) makes it
independent of how the epoch is split, so a resumed or re-split run draws the same passages.
"""

from __future__ import annotations

import random


def example_rng(seed: int, epoch: int, qid: str) -> random.Random:
    # Seeding with a str hashes it with SHA-512: stable across processes, unlike hash().
    return random.Random(f"lead_dist.sample:{seed}:{epoch}:{qid}")


def draw_negatives(rng: random.Random, negatives: list, n: int) -> list[int]:
    """Indices of n negatives: a sample without replacement when the list is long enough; otherwise the list in
    a random order, repeated until n (as the reference does); no negatives when the list is empty or n is 0."""
    if n <= 0 or not negatives:
        return []
    if len(negatives) >= n:
        return rng.sample(range(len(negatives)), n)
    order = rng.sample(range(len(negatives)), len(negatives))
    return [order[i % len(order)] for i in range(n)]


def sample_example(record: dict, *, seed: int, epoch: int, num_negatives: int) -> dict:
    """A shard record (all positives, all negatives) -> a training example (one positive, n negatives)."""
    rng = example_rng(seed, epoch, record["qid"])
    positive = rng.randrange(len(record["pos_ids"]))
    chosen = draw_negatives(rng, record["neg_ids"], num_negatives)
    return {
        "qid": record["qid"],
        "query": record["query"],
        "pos_id": record["pos_ids"][positive],
        "pos_title": record["pos_titles"][positive],
        "pos_text": record["pos_texts"][positive],
        "neg_ids": [record["neg_ids"][i] for i in chosen],
        "neg_titles": [record["neg_titles"][i] for i in chosen],
        "neg_texts": [record["neg_texts"][i] for i in chosen],
    }
