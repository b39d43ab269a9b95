"""A cache folder on disk: safetensors shards and a manifest.

    DIR/manifest.json             written last: format, fingerprint, teacher kind/depth/width/scale (and a DE's
                                  per-layer score factors, `layer_scales`), dtype, and each
                                  shard's family, entry count and sha256; its presence means the cache is complete
    DIR/building.json             while a build runs: its fingerprint and settings, so a rerun resumes only the same
                                  build (removed when the manifest is written)
    DIR/<shard>.sha256            while a build runs: the sha256 of each shard written so far, written before the
                                  shard, so a rerun keeps only shards that still match (removed with building.json)
    DIR/<family>-NNNNNN.safetensors   one shard: tensors "final" and "layers" (plus "lengths" for cb), stored in
                                  fp16 or bf16, and the entry ids as JSON in the metadata key "ids"

Shard tensors (M entries, N teacher layers):
    de   final [M, D]                 layers [M, N, D]
    ce   final [M]                    layers [M, N]
    cb   final [sum T, D']            layers [sum T, N, D]        lengths [M] (int64; T of each entry, in order)

Every shard is checked against the manifest's sha256 when training reads it (`read_verified_shard`): a flipped byte
or garbage in a shard names the file instead of training on NaN. Reading one shard costs one pass over its bytes,
which are hashed as they are read (lead_dist/train/README.md, "Teacher caches", gives the measured cost).

A shard's bytes depend only on its entries' values (safetensors sorts the tensors; the one metadata key is fixed), so
the same build gives byte-identical files however many ranks wrote it and however often it was interrupted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lead_dist.atomic import atomic_open, atomic_write_text
from lead_dist.teacher_cache.fingerprint import TeacherCacheError

# 2: a DE's last block is stored as its final vector, and the manifest records each layer's score factor
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
BUILDING = "building.json"
DIGEST_SUFFIX = ".sha256"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def to_storage(values: Tensor, dtype: str, where: str) -> Tensor:
    """float32 -> the storage dtype; a value fp16 cannot hold is an error (bf16 has float32's range)."""
    if not torch.isfinite(values).all():
        raise TeacherCacheError(f"{where}: the teacher produced a non-finite value; check the teacher's weights")
    limit = torch.finfo(DTYPES[dtype]).max
    if values.numel() and float(values.abs().max()) > limit:
        raise TeacherCacheError(
            f"{where}: a teacher output of {float(values.abs().max()):.4g} exceeds the fp16 range ({limit:.0f}); "
            "build the cache with --dtype bf16"
        )
    return values.to(DTYPES[dtype])


def shard_tensors(kind: str, pairs: list[tuple[Tensor, Tensor]], dtype: str, where: str) -> dict[str, Tensor]:
    """Per-entry (final, layers) -> the shard's tensors (see the module docstring)."""
    finals, layers = [final for final, _ in pairs], [layer for _, layer in pairs]
    if kind == "cb":
        tensors = {"final": torch.cat(finals), "layers": torch.cat(layers)}
        lengths = torch.tensor([len(final) for final in finals], dtype=torch.int64)
        return {key: to_storage(value, dtype, where) for key, value in tensors.items()} | {"lengths": lengths}
    return {
        "final": to_storage(torch.stack(finals), dtype, where),
        "layers": to_storage(torch.stack(layers), dtype, where),
    }


def digest_path(shard: Path) -> Path:
    """Where a build records a shard's sha256 until the manifest holds it: `<shard>.sha256`."""
    return shard.with_name(shard.name + DIGEST_SUFFIX)


def write_shard(path: Path, keys: list[str], tensors: dict[str, Tensor]) -> str:
    """Write one shard and, before it, its sha256 (`digest_path`); returns the digest."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"ids": json.dumps(keys, ensure_ascii=False)})
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_text(digest_path(path), digest + "\n")
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return digest


def _parse_shard(path: Path, data: bytes) -> tuple[list[str], dict[str, Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        header_size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_size])
        keys = json.loads(header["__metadata__"]["ids"])
        return keys, load(data)
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as error:
        raise TeacherCacheError(f"{path}: unreadable cache shard ({error}); rebuild the cache") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TeacherCacheError(f"{path}: unreadable cache shard ({error}); rebuild the cache") from None


def read_shard(path: Path) -> tuple[list[str], dict[str, Tensor]]:
    """A shard's entry ids and tensors, unchecked (a build's own files, tests); training reads `read_verified_shard`."""
    return _parse_shard(path, _read_bytes(path))


def read_verified_shard(path: Path, sha256: str) -> tuple[list[str], dict[str, Tensor]]:
    """`read_shard` of a shard whose bytes must hash to `sha256` (the manifest's): one read, hashed in memory."""
    data = _read_bytes(path)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise TeacherCacheError(
            f"teacher.cache: {path}: sha256 differs from the one recorded in {MANIFEST} (the file is damaged); "
            "rebuild the cache with `lead-dist cache-teacher`"
        )
    return _parse_shard(path, data)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        hint = " (a build is unfinished: rerun `lead-dist cache-teacher`)" if (folder / BUILDING).exists() else ""
        raise TeacherCacheError(
            f"teacher.cache: {path} not found{hint}; is {folder} a `lead-dist cache-teacher` folder?"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TeacherCacheError(f"teacher.cache: {path}: unreadable ({error}); rebuild the cache") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise TeacherCacheError(f"teacher.cache: {path}: expected format_version {FORMAT_VERSION}; rebuild the cache")
    return manifest
