"""Training from a cache: `CachedTeacher` stands where the frozen teacher stood, with no weights and no forward cost.

It is an `nn.Module` with the teacher's `kind`, `num_layers` and `hidden_size`, so set-up, the layer schedule and the
objective treat it like the teacher. Collation turns a batch's ids into cache rows (`collate`); its forward looks the
rows up and returns what the live teacher's forward returns, upcast to float32:

    de   Reps(final [B, D], layers [K, B, D], the teacher's scales)        via DualEncoder.score, gathered across
    cb   Reps(final [B, T, D'], layers [K, B, T, D], mask [B, T])          ranks by objective.py like live Reps
    ce   (final [B], layers [K, B])

So cross-batch and cross-rank candidates of a DE / ColBERT teacher are scored from the cached vectors by the same
`score` and the same gather as the live teacher's. The whole cache is read into host memory (in its fp16 / bf16)
on every rank when training starts, each shard checked against the manifest's sha256 (format.py); only the rows of
a batch are upcast and moved to the device.
A batch id the cache lacks is a TeacherCacheError naming the id, never a zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lead_dist.config import Config
from lead_dist.teacher_cache.fingerprint import TeacherCacheError, check_fingerprint, teacher_fingerprint
from lead_dist.teacher_cache.format import read_manifest, read_verified_shard
from lead_dist.teacher_cache.plan import pair_key


class CacheTable:
    """One family's entries: id -> row, and the rows' values (tokens of every entry packed, for cb)."""

    def __init__(self, keys: list[str], final: Tensor, layers: Tensor, lengths: Tensor | None) -> None:
        self.rows = {key: row for row, key in enumerate(keys)}
        self.final, self.layers, self.lengths = final, layers, lengths
        self.offsets = None if lengths is None else torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])

    def lookup(self, keys: Sequence[str], what: str, folder: Path) -> Tensor:
        rows = []
        for key in keys:
            row = self.rows.get(key)
            if row is None:
                raise TeacherCacheError(
                    f"teacher.cache {folder}: no entry for {what} {key}; the cache is incomplete or damaged: rebuild it"
                )
            rows.append(row)
        return torch.tensor(rows, dtype=torch.long)


def load_tables(folder: Path, manifest: dict[str, Any]) -> dict[str, CacheTable]:
    parts: dict[str, list[tuple[list[str], dict[str, Tensor]]]] = {}
    for shard in manifest["shards"]:
        keys, tensors = read_verified_shard(folder / shard["name"], shard["sha256"])
        if len(keys) != shard["count"]:
            raise TeacherCacheError(f"{folder / shard['name']}: {len(keys)} ids, the manifest says {shard['count']}")
        parts.setdefault(shard["family"], []).append((keys, tensors))
    tables = {}
    for family, shards in parts.items():
        keys = [key for shard_keys, _ in shards for key in shard_keys]
        final = torch.cat([tensors["final"] for _, tensors in shards])
        layers = torch.cat([tensors["layers"] for _, tensors in shards])
        lengths = torch.cat([tensors["lengths"] for _, tensors in shards]) if "lengths" in shards[0][1] else None
        tables[family] = CacheTable(keys, final, layers, lengths)
    return tables


class CachedTeacher(nn.Module):
    """The frozen teacher as read from a cache folder (see the module docstring)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], tables: dict[str, CacheTable]) -> None:
        super().__init__()
        self.folder = folder
        teacher = manifest["teacher"]
        self.kind: str = teacher["kind"]
        self.num_layers: int = int(teacher["num_layers"])
        self.hidden_size: int = int(teacher["hidden_size"])
        self.scale: float = float(teacher["scale"])
        self.layer_scales: list[float] | None = teacher.get("layer_scales")
        self.tables = tables

    @classmethod
    def open(cls, config: Config) -> CachedTeacher:
        """The cache `config.teacher.cache` names, after its fingerprint was checked against `config`."""
        assert config.teacher is not None and config.teacher.cache is not None
        folder = Path(config.teacher.cache)
        manifest = read_manifest(folder)
        check_fingerprint(folder, manifest.get("fingerprint", {}), teacher_fingerprint(config))
        return cls(folder, manifest, load_tables(folder, manifest))

    # --- collation: ids -> rows ----------------------------------------------------------------------------------

    def collate(self, examples: list[dict]) -> dict[str, dict[str, Tensor]]:
        """The rows of a batch, in `data.collate_for`'s layout: DE/CB queries + passages, CE pairs."""
        from lead_dist.data.collate import group_size, passage_layout

        pids, _titles, _texts = passage_layout(examples)
        qids = [example["qid"] for example in examples]
        if self.kind == "ce":
            per_group = group_size(examples)
            keys = [pair_key(qids[i // per_group], pid) for i, pid in enumerate(pids)]
            return {"pairs": {"pair_rows": self.tables["pair"].lookup(keys, "(query, passage) pair", self.folder)}}
        return {
            "queries": {"query_rows": self.tables["query"].lookup(qids, "query id", self.folder)},
            "passages": {"passage_rows": self.tables["passage"].lookup(pids, "passage id", self.folder)},
        }

    # --- the teacher's outputs -----------------------------------------------------------------------------------

    def forward(
        self,
        query_rows: Tensor | None = None,
        passage_rows: Tensor | None = None,
        pair_rows: Tensor | None = None,
        layers: Sequence[int] = (),
    ) -> Any:
        given = {"query": query_rows, "passage": passage_rows, "pair": pair_rows}
        family, rows = next((name, value) for name, value in given.items() if value is not None)
        table, chosen, cpu_rows = self.tables[family], list(layers), rows.cpu()
        if self.kind == "cb":
            return self._token_reps(table, cpu_rows, chosen, rows.device)
        final = table.final[cpu_rows].float().to(rows.device)
        # Only the chosen layers of the chosen rows are copied: [B, K, ...] -> [K, B, ...]
        picked = table.layers[cpu_rows[:, None], torch.tensor(chosen, dtype=torch.long)[None, :]]
        per_layer = picked.float().transpose(0, 1).to(rows.device)
        if self.kind == "ce":
            return final, per_layer
        from lead_dist.models.reps import Reps

        assert self.layer_scales is not None  # format 2 records them for every DE cache
        scales = tuple(float(self.layer_scales[index]) for index in chosen)
        return Reps(final=final, layers=per_layer, mask=None, scale=self.scale, layer_scales=scales)

    def _token_reps(self, table: CacheTable, rows: Tensor, chosen: list[int], device: torch.device) -> Any:
        """ColBERT: each row's tokens padded to the batch's longest with zeros and mask 0 (scores unchanged)."""
        from lead_dist.models.reps import Reps

        assert table.offsets is not None and table.lengths is not None
        counts = table.lengths[rows]
        width = int(counts.max()) if len(rows) else 0
        final = torch.zeros(len(rows), width, table.final.shape[-1])
        per_layer = torch.zeros(len(chosen), len(rows), width, table.layers.shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows.tolist()):
            start, count = int(table.offsets[row]), int(counts[i])
            final[i, :count] = table.final[start : start + count].float()
            per_layer[:, i, :count] = table.layers[start : start + count][:, chosen].float().transpose(0, 1)
            mask[i, :count] = 1
        return Reps(final=final.to(device), layers=per_layer.to(device), mask=mask.to(device), scale=1.0)

    def score(self, q: Any, p: Any) -> tuple[Tensor, Tensor]:
        """The live teacher's own parameter-free score, on cached Reps."""
        from lead_dist.models.colbert import ColBERT
        from lead_dist.models.dual_encoder import DualEncoder

        return (DualEncoder if self.kind == "de" else ColBERT).score(q, p)
