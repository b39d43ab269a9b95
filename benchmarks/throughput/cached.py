"""The cached frozen-teacher cells of the throughput grid (issue 12), and the cache build against `lead-dist encode`.

A cell `<size>/<dtype>/lead-<de|ce>-cached` is the loop's `run_step` with a `CachedTeacher` in place of the frozen
teacher: the same student, batch and data as the contrastive and `lead-<kind>-frozen` cells of the grid. Its tables
are built in memory by the cache's own code (plan entries -> `encode_shard` -> `shard_tensors` in fp16), from the
teacher of the grid, so the step reads exactly what it would read from a cache folder (the folder is only read once,
when training starts). ColBERT is left out: its MaxSim still runs on the cached tokens, and its cache costs hundreds
of times a DE's disk (lead_dist/train/README.md, "Teacher caches").

Keys (per size/dtype/kind, medians over rounds of per-round step-time ratios; the same from CPU time beside them):
    lead_frozen_cached_over_contrastive   cached LEAD step / contrastive step         goal <= 1.15
    lead_frozen_live_over_cached          live frozen-teacher LEAD step / cached one
    cache_build_over_encode               DE teacher: texts/s of the cache build (every layer) over `encode`'s
                                          texts/s (final vector only) on the same passages       goal >= 1.0
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.cells import SizeSpec, TrainedState, Variant, make_variant
from benchmarks.harness.goals import goal
from benchmarks.harness.results import BarPanel
from benchmarks.harness.timing import interleaved_rounds, paired_ratio
from lead_dist.teacher_cache.build import teacher_record
from lead_dist.teacher_cache.encode import encode_shard
from lead_dist.teacher_cache.format import shard_tensors
from lead_dist.teacher_cache.plan import ShardPlan, entries_of_records
from lead_dist.teacher_cache.read import CachedTeacher, CacheTable
from lead_dist.train.trainee import cached_teacher_trainee

CACHED_KINDS = ("de", "ce")
CACHED_GOALS = {
    "lead_frozen_cached_over_contrastive": "a cached frozen-teacher LEAD step costs at most 1.15x a contrastive step",
    "cache_build_over_encode": "the cache build runs at or above the teacher's plain encoding speed (texts/s)",
}


def as_records(examples: list[dict]) -> list[dict]:
    """Stream examples (one positive, drawn negatives) in the shard record layout the cache plan reads."""
    return [
        {"qid": e["qid"], "query": e["query"], "pos_ids": [e["pos_id"]], "pos_titles": [e["pos_title"]],
         "pos_texts": [e["pos_text"]], "neg_ids": e["neg_ids"], "neg_titles": e["neg_titles"],
         "neg_texts": e["neg_texts"]}
        for e in examples
    ]  # fmt: skip


def in_memory_cache(teacher: torch.nn.Module, examples: list[dict], lengths: tuple[int, int]) -> CachedTeacher:
    tables = {}
    for family, items in entries_of_records(as_records(examples), teacher.kind).items():
        pairs = encode_shard(teacher, ShardPlan(family, 0, tuple(items)), lengths, batch_size=64,
                             device=torch.device("cpu"))  # fmt: skip
        tensors = shard_tensors(teacher.kind, pairs, "fp16", f"benchmark {family}")
        tables[family] = CacheTable([e.key for e in items], tensors["final"], tensors["layers"], None)
    return CachedTeacher(Path("(in memory)"), {"teacher": teacher_record(teacher)}, tables)


@dataclasses.dataclass
class CachedVariant(Variant):
    @property
    def name(self) -> str:
        return f"{self.size}/{'fp32' if self.dtype == 'no' else self.dtype}/lead-{self.teacher_kind}-cached"


def cached_variants(spec: SizeSpec, models: dict[str, Any], examples: list[dict], dtypes: tuple[str, ...]) -> list:
    from lead_dist.data import collate_for

    lengths = (spec.query_max_length, spec.passage_max_length)
    student_batch = collate_for(models["student"], examples, *lengths)
    variants = []
    for kind in CACHED_KINDS:
        teacher = in_memory_cache(models[f"teacher_{kind}"].eval(), examples, lengths)
        batch = {"student": student_batch, "teacher": teacher.collate(examples)}
        for dtype in dtypes:
            pair = {"student": models["student"], "teacher": teacher}
            variant = make_variant(spec, "lead", kind, False, dtype, pair, batch, TrainedState())
            variant.trainees["teacher"] = cached_teacher_trainee("teacher", teacher)  # as prepare_trainees drives it
            variants.append(CachedVariant(**{f.name: getattr(variant, f.name) for f in dataclasses.fields(variant)}))
    return variants


def cached_ratios(timed: dict[str, Any], size: str, dtypes: list[str]) -> dict[str, dict[str, Any]]:
    over_contrastive, live_over_cached = {}, {}
    for dtype in dtypes:
        for kind in CACHED_KINDS:
            cached, key = f"{size}/{dtype}/lead-{kind}-cached", f"{size}/{dtype}/{kind}"
            over_contrastive[key] = paired_ratio(timed, cached, f"{size}/{dtype}/contrastive")
            live_over_cached[key] = paired_ratio(timed, f"{size}/{dtype}/lead-{kind}-frozen", cached)
    return {"lead_frozen_cached_over_contrastive": over_contrastive, "lead_frozen_live_over_cached": live_over_cached}


def build_over_encode(teacher: torch.nn.Module, spec: SizeSpec, passages: int, rounds: int) -> dict[str, Any]:
    """Texts/s of the cache build against `lead-dist encode`'s on the same SciFact passages, interleaved."""
    from benchmarks.harness.fixtures import scifact_examples
    from lead_dist.retrieval.encode import encode_passages
    from lead_dist.retrieval.text_encoder import LeadTextEncoder

    examples = scifact_examples(passages, 0, seed=1)
    records = [{"id": e["pos_id"], "title": "", "text": e["pos_text"]} for e in examples]
    plan = ShardPlan("passage", 0, tuple(entries_of_records(as_records(examples), "de")["passage"]))
    lengths = (spec.query_max_length, spec.passage_max_length)
    encoder = LeadTextEncoder(teacher.eval())

    def encode() -> int:
        return len(encode_passages(encoder, records, max_length=spec.passage_max_length, batch_size=64))

    def build() -> int:
        return len(encode_shard(teacher, plan, lengths, batch_size=64, device=torch.device("cpu")))

    timed = interleaved_rounds({"encode": encode, "cache_build": build}, rounds, unit="texts")
    return {"texts": len(plan.entries), "ratio": paired_ratio(timed, "encode", "cache_build"),
            "texts_per_s": {name: result["per_second"] for name, result in timed.items()}}  # fmt: skip


def cached_goals(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The two goals of issue 12 on wall-time ratios (the CPU-time ratios sit beside them in the JSON)."""
    return {
        "lead_frozen_cached_over_contrastive": goal(
            results["lead_frozen_cached_over_contrastive"], "<=", 1.15, measure=lambda r: r["wall"], worst_first=False
        ),
        "cache_build_over_encode": goal(
            results["cache_build_over_encode"], ">=", 1.0, measure=lambda r: r["ratio"]["wall"], worst_first=False
        ),
    }


def cached_panels(payload: dict[str, Any]) -> list[BarPanel]:
    """The two step-time ratios of the cached cells (wall time, median of rounds), when the run measured them."""
    panels = []
    for key, title, reference in (
        ("lead_frozen_cached_over_contrastive", "cached frozen-teacher LEAD / contrastive", ("goal <= 1.15", 1.15)),
        ("lead_frozen_live_over_cached", "live frozen-teacher LEAD / cached LEAD", None),
    ):
        values = payload.get(key)
        if values:
            panels.append(BarPanel(title, "step time ratio", list(values), [v["wall"] for v in values.values()],
                                          reference=reference, value_format="{:.2f}"))  # fmt: skip
    return panels
