"""What a teacher cache was computed from, so a cache is never read for another teacher or other data.

The fingerprint is computed from the config and the files it names, without building the teacher (training from a
cache never loads it): every field is a short string, and the first field that differs names the problem.

    teacher_kind      de | ce | cb
    teacher_weights   sha256 over the teacher folder's weight files (names + contents) and `num_layers`; for a
                      teacher built from `teacher.config` (random weights), over that config and the run seed, which
                      together fix the weights (setup builds the teacher under its own RNG fork from `seed`)
    tokenizer         sha256 over the tokenizer's files (the teacher folder's, or `teacher.tokenizer`)
    options           the teacher section's model options (pooling, similarity, scale / projection, augmentation)
    query_max_length, passage_max_length
    train_shards      sha256 over the training shards' names and sha256 as the prepared manifest lists them
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lead_dist.config import Config, ModelConfig

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "merges.txt")
FIELDS = (
    "teacher_kind",
    "teacher_weights",
    "tokenizer",
    "options",
    "query_max_length",
    "passage_max_length",
    "train_shards",
)


class TeacherCacheError(ValueError):
    """A cache that cannot serve this config (fingerprint field, missing entry, unreadable file), named."""


def _digest(parts: list[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


def _files_digest(folder: Path, names: list[str]) -> str:
    from lead_dist.data.manifest import file_sha256

    return _digest([f"{name}:{file_sha256(folder / name)}" for name in sorted(names)])


def _weights(config: Config, teacher: ModelConfig) -> str:
    from lead_dist.models.folder import resolve_folder

    if teacher.path is None:
        return _digest(["config", json.dumps(teacher.config, sort_keys=True), f"seed={config.seed}"])
    folder = resolve_folder(teacher.path)
    names = [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.suffix in WEIGHT_SUFFIXES]
    if not names:
        raise TeacherCacheError(f"teacher.path: {folder} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    # A kind whose head is missing from the folder gets a fresh one drawn from the seed (models/folder.py).
    fresh_head = teacher.kind in ("ce", "cb") and not (folder / "lead_head.safetensors").is_file()
    extra = [f"num_layers={teacher.num_layers}", f"seed={config.seed}" if fresh_head else "head=stored"]
    return _digest([_files_digest(folder, names), *extra])


def _tokenizer(teacher: ModelConfig) -> str:
    from lead_dist.models.folder import resolve_folder

    source = teacher.tokenizer if teacher.path is None else teacher.path
    assert source is not None, "config validation requires teacher.tokenizer with teacher.config"
    folder = resolve_folder(source, model=teacher.path is not None)  # teacher.tokenizer: a tokenizer folder
    names = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not names:
        raise TeacherCacheError(f"teacher tokenizer: {folder} holds none of {', '.join(TOKENIZER_FILES)}")
    return _files_digest(folder, names)


def _train_shards(config: Config) -> str:
    from lead_dist.data.location import parse_location
    from lead_dist.data.remote import read_manifest_at

    assert config.data.train is not None, "config validation requires data.train"
    location = parse_location(config.data.train, config.data.manifest)
    manifest = read_manifest_at(location, retries=config.data.retries, backoff_s=config.data.retry_backoff_s)
    described = manifest["shards"]["train"]
    if location.kind == "list":
        described = location.shards_in_list(described)
    return _digest([f"{entry['name']}:{entry['sha256']}" for entry in described])


def teacher_fingerprint(config: Config) -> dict[str, str]:
    """The fingerprint of the teacher and data a distill config names (see the module docstring)."""
    teacher = config.teacher
    if teacher is None:
        raise TeacherCacheError("teacher: a teacher cache needs a distill config with a teacher section")
    return {
        "teacher_kind": teacher.kind,
        "teacher_weights": _weights(config, teacher),
        "tokenizer": _tokenizer(teacher),
        "options": json.dumps(teacher.model_options(), sort_keys=True),
        "query_max_length": str(config.data.query_max_length),
        "passage_max_length": str(config.data.passage_max_length),
        "train_shards": _train_shards(config),
    }


def check_fingerprint(cache: str | Path, stored: dict[str, Any], expected: dict[str, str]) -> None:
    """Raise TeacherCacheError naming the first field where the cache's fingerprint differs from the config's."""
    for field in FIELDS:
        if stored.get(field) != expected[field]:
            raise TeacherCacheError(
                f"teacher.cache {cache}: fingerprint field {field!r} differs (cache {stored.get(field)!r}, config "
                f"{expected[field]!r}); the cache was built for another teacher or data: rebuild it with "
                "`lead-dist cache-teacher` or remove teacher.cache"
            )
