"""`lead-dist cache-teacher`: run the frozen teacher once over everything training can draw, shard by shard.

Every rank computes the same plan (plan.py) and encodes its contiguous share of the shards; a shard already on disk
whose bytes still match the sha256 recorded beside it when it was written is kept, so a rerun after a kill resumes;
one that does not (truncated, damaged, or without a recorded digest) is named and encoded again. Each shard is
written atomically, the manifest last (by rank 0, after every rank finished, with each shard's digest checked once
more), so an interrupted build is never mistaken for a cache and a manifest never records a damaged shard. Before anything is written rank 0
prints the size the cache will take and the build stops when that exceeds `max_bytes`.

Folder rules (checked on every rank before anything is written, so all ranks decide alike): a folder holding a
finished cache of the same teacher and data is left as it is (nothing to do); one holding another cache, or another
unfinished build, or anything else, is refused: a build never overwrites or mixes into a user's earlier data.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lead_dist.config import Config
from lead_dist.distributed import barrier, contiguous_share
from lead_dist.folder_claim import folder_entries
from lead_dist.teacher_cache.encode import encode_shard, tokenize_entries
from lead_dist.teacher_cache.fingerprint import TeacherCacheError, teacher_fingerprint
from lead_dist.teacher_cache.format import (
    BUILDING,
    DIGEST_SUFFIX,
    FORMAT_VERSION,
    MANIFEST,
    digest_path,
    read_manifest,
    shard_tensors,
    write_json,
    write_shard,
)
from lead_dist.teacher_cache.plan import Entry, ShardPlan, collect_entries, plan_shards

SIZE_SAMPLE = 1000  # texts tokenized per family to estimate a ColBERT cache's tokens
PAUSE_ENV = "LEAD_DIST_TEST_CACHE_PAUSE_S"  # test hook: seconds to sleep after each shard (the kill -9 test)


def estimate_bytes(teacher: nn.Module, entries: dict[str, list[Entry]], lengths: tuple[int, int]) -> int:
    """Bytes of the stored values (2 per value): per entry (N + 1) x D (de), N + 1 (ce), tokens x (N D + D') (cb)."""
    depth, width = int(teacher.num_layers), int(teacher.hidden_size)
    if teacher.kind == "ce":
        return 2 * (depth + 1) * sum(len(items) for items in entries.values())
    if teacher.kind == "de":
        return 2 * (depth + 1) * width * sum(len(items) for items in entries.values())
    projection = getattr(teacher, "projection", None)
    final_width = int(projection.out_features) if projection is not None else width
    total = 0.0
    for family, items in entries.items():
        if not items:
            continue
        step = max(1, len(items) // SIZE_SAMPLE)
        sample = items[::step][:SIZE_SAMPLE]
        tokens = tokenize_entries(teacher, family, sample, lengths)["attention_mask"].sum(dim=1).float().mean()
        total += float(tokens) * len(items)
    return int(2 * math.ceil(total) * (depth * width + final_width))


def human_size(size: float) -> str:
    """1234567 -> '1.23 MB' (decimal units, as disks are sold)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.3g} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    raise AssertionError("unreachable")


def _claim_state(out: Path, state: dict[str, Any]) -> str:
    """'complete', 'resume' or 'new' for `out`; refuses a folder that holds anything else (read-only check)."""
    if (out / MANIFEST).exists():
        manifest = read_manifest(out)
        stored = {key: manifest.get(key) for key in state}
        if stored != state:
            field = next(key for key in state if stored[key] != state[key])
            raise TeacherCacheError(f"--out {out}: holds a finished cache with another {field}; choose another --out")
        return "complete"
    if (out / BUILDING).exists():
        stored = json.loads((out / BUILDING).read_text())
        if stored != state:
            field = next((key for key in state if stored.get(key) != state[key]), "format")
            raise TeacherCacheError(
                f"--out {out}: holds an unfinished build with another {field}; rerun that build or choose another --out"
            )
        return "resume"
    if folder_entries(out):  # the lock the verb holds (lead_dist.folder_claim) is not the user's data
        raise TeacherCacheError(f"--out {out}: exists and is not a teacher cache; choose a new folder")
    return "new"


def _start(out: Path, state: dict[str, Any], decision: str) -> None:
    """Rank 0: create the folder and its building marker; drop temporaries a killed build left behind."""
    out.mkdir(parents=True, exist_ok=True)
    if decision == "new":
        write_json(out / BUILDING, state)
    for stale in out.glob("*.tmp"):
        stale.unlink()


def kept_shard_problem(shard: Path) -> str | None:
    """Why a shard an earlier (killed) build left cannot be kept: its bytes differ from the sha256 recorded when it
    was written, or no digest was recorded; None when it matches."""
    from lead_dist.data.manifest import file_sha256

    recorded = digest_path(shard)
    if not recorded.is_file():
        return f"{shard}: no sha256 was recorded for it ({recorded.name} missing)"
    if file_sha256(shard) != recorded.read_text(encoding="utf-8").strip():
        return f"{shard}: sha256 differs from the one recorded in {recorded.name} when it was written (damaged)"
    return None


def teacher_record(teacher: nn.Module) -> dict[str, Any]:
    """What a cache records of its teacher, and what `CachedTeacher` scores the cached tables with."""
    return {
        "kind": teacher.kind,
        "num_layers": int(teacher.num_layers),
        "hidden_size": int(teacher.hidden_size),
        "scale": float(getattr(teacher, "scale", 1.0)),
        # a DE scores its last block as its final vector and the others with `layer_scale` (dual_encoder.py)
        "layer_scales": list(teacher.layer_scales(range(teacher.num_layers))) if teacher.kind == "de" else None,
    }


def _finish(out: Path, state: dict[str, Any], plans: list[ShardPlan], teacher: nn.Module) -> dict[str, Any]:
    shards = []
    for plan in plans:
        problem = kept_shard_problem(out / plan.name)
        if problem is not None:  # damaged while the build ran: never recorded as good
            raise TeacherCacheError(f"cache-teacher: {problem}; rerun the build to encode it again")
        digest = digest_path(out / plan.name).read_text(encoding="utf-8").strip()
        shards.append({"name": plan.name, "family": plan.family, "count": len(plan.entries), "sha256": digest})
    manifest = {
        **state,
        "teacher": teacher_record(teacher),
        "shards": shards,
        "counts": {
            family: sum(s["count"] for s in shards if s["family"] == family) for family in {p.family for p in plans}
        },
    }
    write_json(out / MANIFEST, manifest)
    (out / BUILDING).unlink()
    for recorded in out.glob(f"*{DIGEST_SUFFIX}"):  # the manifest holds the digests now
        recorded.unlink()
    return manifest


def build_cache(
    config: Config,
    out: str | Path,
    *,
    dtype: str = "fp16",
    shard_size: int = 4096,
    batch_size: int = 64,
    max_bytes: int = 50 * 10**9,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world: int = 1,
    log: Any = print,
) -> dict[str, Any]:
    """Build (or finish) the cache of `config`'s frozen teacher in `out`. Returns this rank's summary."""
    from lead_dist.models.from_config import build_teacher

    out = Path(out)
    state = {"format_version": FORMAT_VERSION, "fingerprint": teacher_fingerprint(config), "dtype": dtype,
             "shard_size": shard_size}  # fmt: skip
    decision = _claim_state(out, state)
    if decision == "complete":
        return {"rank": rank, "complete_already": True, "encoded": 0}
    lengths = (config.data.query_max_length, config.data.passage_max_length)
    teacher = build_teacher(config).to(device).eval()
    entries = collect_entries(config, teacher.kind)
    plans = plan_shards(entries, shard_size)
    estimate = estimate_bytes(teacher, entries, lengths)
    counts = ", ".join(f"{len(items)} {family} entries" for family, items in entries.items())
    if rank == 0:
        log(f"cache-teacher: {counts} x {teacher.num_layers} layers of a {teacher.kind} teacher: about "
            f"{human_size(estimate)} in {dtype} (limit {human_size(max_bytes)})")  # fmt: skip
    if estimate > max_bytes:
        raise TeacherCacheError(
            f"cache-teacher: the cache would take about {human_size(estimate)}, above --max-gb {max_bytes / 1e9:g}; "
            "raise --max-gb if the disk has room (see lead_dist/train/README.md for what each kind costs)"
        )
    barrier()  # every rank decided before rank 0 touches the folder
    if rank == 0:
        _start(out, state, decision)
    barrier()
    summary = {"rank": rank, "shards": 0, "skipped": 0, "damaged": 0, "encoded": 0, "seconds": 0.0,
               "estimated_bytes": estimate}  # fmt: skip
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    for plan in (plans[i] for i in contiguous_share(len(plans), rank, world)):
        if (out / plan.name).exists():
            problem = kept_shard_problem(out / plan.name)
            if problem is None:
                summary["skipped"] += 1
                continue
            log(f"cache-teacher rank {rank}: {problem}; encoding it again")
            summary["damaged"] += 1
        started = time.perf_counter()
        pairs = encode_shard(teacher, plan, lengths, batch_size=batch_size, device=torch.device(device))
        tensors = shard_tensors(teacher.kind, pairs, dtype, str(out / plan.name))
        write_shard(out / plan.name, [e.key for e in plan.entries], tensors)
        seconds = time.perf_counter() - started
        summary["shards"] += 1
        summary["encoded"] += len(plan.entries)
        summary["seconds"] += seconds
        log(f"cache-teacher rank {rank}: {plan.name} ({len(plan.entries)} entries) in {seconds:.2f} s")
        time.sleep(pause)
    barrier()
    if rank == 0:
        summary["bytes"] = sum(s.stat().st_size for s in out.glob("*.safetensors"))
        _finish(out, state, plans, teacher)
    barrier()
    return summary
