"""The peer trainer's step: sentence-transformers with MultipleNegativesRankingLoss on the same student.

The lead_dist student is saved as a model folder (which sentence-transformers loads with the same pooling and
normalisation) and loaded back as a `SentenceTransformer`, so both trainers start from the same weights. The peer
sees the same queries and passages, tokenized at the same maximum lengths (queries 32, passages 128 in the default
grid), trains with the same AdamW settings, the same torch threads and the same autocast dtype. Its candidates are
every positive and negative of the batch with scale 20 cosine, which is what lead_dist's contrastive-only step with
global candidates computes on one process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lead_dist.train.trainee import make_optimizer


class PeerStep:
    """One sentence-transformers training step (forward, MNRL, backward, clip, AdamW), batch tokenized up front."""

    def __init__(self, student: Any, examples: list[dict], query_max_length: int, passage_max_length: int, dtype: str):
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        self._folder = tempfile.TemporaryDirectory(prefix="throughput-peer-")
        student.save(Path(self._folder.name))
        self.model = SentenceTransformer(self._folder.name, device="cpu")
        self.model.train()
        self.loss = MultipleNegativesRankingLoss(self.model, scale=20.0)
        self.optimizer = make_optimizer(self.model, 5e-5, 0.01)  # the same AdamW groups as lead_dist's
        self.dtype = dtype
        self.examples = len(examples)
        num_negatives = len(examples[0]["neg_texts"])
        self.model.max_seq_length = query_max_length
        columns = [self.model.tokenize([e["query"] for e in examples])]
        self.model.max_seq_length = passage_max_length
        columns.append(self.model.tokenize([e["pos_text"] for e in examples]))
        for n in range(num_negatives):  # MNRL's (anchor, positive, negative_1, .., negative_n) columns
            columns.append(self.model.tokenize([e["neg_texts"][n] for e in examples]))
        self.columns = columns
        self.seconds: dict[str, float] = {}

    def tokens(self) -> int:
        return sum(int(c["attention_mask"].sum()) for c in self.columns)

    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(c["input_ids"].shape) for c in self.columns]  # type: ignore[misc]

    def step(self) -> int:
        """One step; its phase times (as `run_step` names them) are kept in `seconds`."""
        autocast = (
            torch.autocast(device_type="cpu", dtype=torch.bfloat16)
            if self.dtype == "bf16"
            else torch.autocast(device_type="cpu", enabled=False)
        )
        t0 = time.perf_counter()
        with autocast:
            # The loss copies nothing it is given, so the pre-tokenized columns can be reused every step.
            value = self.loss([dict(c) for c in self.columns], None)
        t1 = time.perf_counter()
        value.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 2.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        self.seconds = {"forward_and_loss_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2}
        return self.examples

    def close(self) -> None:
        self._folder.cleanup()
