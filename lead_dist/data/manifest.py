"""manifest.json of a prepared folder: counts, provenance (sha256 of every source), options, drops, shards."""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

from lead_dist.data.errors import ShardError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_file(path: str | Path) -> dict:
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def negatives_summary(counts: list[int]) -> dict:
    """Negatives per query: min, max, mean, median and how many queries have none."""
    if not counts:
        return {"min": 0, "max": 0, "mean": 0.0, "median": 0.0, "queries_without_negatives": 0}
    return {
        "min": min(counts),
        "max": max(counts),
        "mean": round(sum(counts) / len(counts), 4),
        "median": float(statistics.median(counts)),
        "queries_without_negatives": sum(1 for c in counts if c == 0),
    }


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a prepared folder, with errors that say what is wrong and how to get a valid one."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ShardError(f"{path}: not found; is {folder} a folder written by `lead-dist prepare`?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ShardError(f"{path}: unreadable manifest ({error}); re-run `lead-dist prepare`") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: expected format_version {FORMAT_VERSION}; re-run `lead-dist prepare`")
    return manifest
