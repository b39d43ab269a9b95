"""Corpus embeddings on disk, one folder per encode: written in shards, resumable, tied to the model that wrote them.

Layout of an embeddings folder:
    manifest.json            fingerprint, dim, passage count, shard plan, encode settings (written first)
    shard-00000.npy          float32 [n, dim] vectors of passages [k*shard_size, ...) in corpus order
    shard-00000.ids.json     their passage ids
    shard-00000.done.json    written last: the shard is complete (count, empty texts, seconds, passages/s, and
                             the sha256 of its vectors and ids files)
Every file is written under a temporary name and renamed, so a killed encode leaves no half shard behind, and a
rerun skips shards whose done file exists. The shard plan is fixed by the first run (kept in the manifest), so a
resume with another number of ranks still finds the same shards.

A shard's files are checked against the sha256 its done file records whenever they are read (`iter_shards`,
`passage_ids`) and when an encode would reuse them: a damaged file is named, never searched. A reused shard that is
damaged is encoded again (and said); a finished folder read by search or evaluate is refused. What it costs:
lead_dist/retrieval/README.md, "Refusals".
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lead_dist.atomic import atomic_open, atomic_write_bytes
from lead_dist.data.manifest import file_sha256
from lead_dist.distributed import barrier, contiguous_share
from lead_dist.errors import UsageError
from lead_dist.folder_claim import clear_folder
from lead_dist.retrieval.corpus_digest import corpus_digest
from lead_dist.retrieval.encode import Throughput, count_truncated_passages, encode_passages
from lead_dist.retrieval.sources import count_corpus, iter_corpus
from lead_dist.retrieval.text_encoder import TextEncoder

MANIFEST = "manifest.json"
MAX_SHARD_SIZE = 100_000


def _atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:  # a file object: np.save adds no ".npy" to its name
        np.save(handle, array)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


SHARD_FILES = {"vectors": ".npy", "ids": ".ids.json"}  # what a done file's "sha256" covers, by role


def shard_damage(
    out: Path, k: int, roles: tuple[str, ...] = ("vectors", "ids"), contents: dict[str, np.ndarray] | None = None
) -> str | None:
    """Why shard `k`'s files (the given roles) cannot be trusted: a file whose sha256 differs from the one its done
    file records, or a done file that records none (unreadable, or written before checksums); None when they match.
    With `contents`, each file is read once into it and hashed in memory (a reader's case: no second read)."""
    done = out / f"{shard_name(k)}.done.json"
    try:
        recorded = json.loads(done.read_text(encoding="utf-8")).get("sha256")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        return f"{done}: unreadable ({error})"
    if not isinstance(recorded, dict):
        return f"{done}: records no sha256 of the shard's files (written by an older lead_dist)"
    for role in roles:
        path = out / f"{shard_name(k)}{SHARD_FILES[role]}"
        if not path.is_file():
            return f"{path}: missing"
        if contents is None:
            digest = file_sha256(path)
        else:
            contents[role] = np.empty(path.stat().st_size, dtype=np.uint8)  # not zeroed: the read fills it
            with path.open("rb") as handle:
                handle.readinto(memoryview(contents[role]))
            digest = hashlib.sha256(contents[role]).hexdigest()
        if digest != recorded.get(role):
            return f"{path}: sha256 differs from the one recorded in {done.name} (the file is damaged)"
    return None


def _npy(data: np.ndarray) -> np.ndarray:
    """The array an .npy file's bytes (`data`, uint8) hold, as a view of them: no copy, writable like `data`."""
    stream = io.BytesIO(data[: min(len(data), 1 << 17)].tobytes())  # the header (at most 64 KiB in format 1.0)
    version = np.lib.format.read_magic(stream)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:  # np.save writes 1.0 (2.0 for huge headers); anything else: numpy's own reader
        return np.load(io.BytesIO(data.tobytes()))
    shape, fortran, dtype = readers[version](stream)
    array = data[stream.tell() : stream.tell() + math.prod(shape) * dtype.itemsize].view(dtype)
    return array.reshape(shape, order="F" if fortran else "C")


def _verified(out: Path, k: int, roles: tuple[str, ...] = ("vectors", "ids")) -> dict[str, np.ndarray]:
    """The bytes of shard `k`'s files (the given roles), each read once and checked; UsageError naming a damaged one."""
    contents: dict[str, np.ndarray] = {}
    problem = shard_damage(out, k, roles, contents)
    if problem is not None:
        raise UsageError(f"{problem}; encode the corpus again: `lead-dist encode ... --overwrite` into {out}")
    return contents


def read_manifest(folder: str | Path) -> dict:
    """The manifest of an embeddings folder; a folder without one, or with another kind of manifest (e.g. a
    prepared shards folder), is refused by name."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise UsageError(f"{folder}: not an embeddings folder written by `lead-dist encode` (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    missing = [key for key in ("fingerprint", "dim", "num_passages", "shard_size", "num_shards") if key not in manifest]
    if not isinstance(manifest, dict) or missing:
        raise UsageError(
            f"{folder}: not an embeddings folder written by `lead-dist encode` ({MANIFEST} lacks {missing}; "
            "a `lead-dist prepare` shards folder is encoded with `lead-dist encode --corpus DIR --out EMB`)"
        )
    return manifest


@dataclass
class RankPassages:
    """One rank's share of an encoded corpus: blocks of vectors [n, dim] and their passage ids (what it searches)."""

    vectors: list[np.ndarray]
    ids: list[list[str]]


def shards_of_rank(num_shards: int, rank: int, world: int) -> range:
    """Each rank owns a contiguous block of shards (so a contiguous share of the corpus)."""
    return contiguous_share(num_shards, rank, world)


def _check_reuse(
    manifest: dict, manifest_path: Path, encoder: TextEncoder, shard_size: int | None, settings: dict, digest: str
) -> None:
    """Refuse to add to (or reuse) a folder of another model, shard plan, setting or corpus content."""
    fix = "pass --overwrite to encode again into this folder, or use a new folder"
    if manifest["fingerprint"] != encoder.fingerprint:
        raise UsageError(
            f"{manifest_path}: this folder holds embeddings of another model (fingerprint "
            f"{manifest['fingerprint']}, this model {encoder.fingerprint}); {fix}"
        )
    if manifest.get("corpus_sha256") != digest:
        recorded = manifest.get("corpus_sha256") or "none (written before corpus checksums)"
        raise UsageError(
            f"{manifest_path}: these embeddings were encoded from other corpus content (sha256 {recorded}, the "
            f"corpus {settings['corpus']} now has {digest}): the texts changed since; {fix}"
        )
    if shard_size is not None and shard_size != manifest["shard_size"]:
        raise UsageError(
            f"{manifest_path}: shard_size is {manifest['shard_size']} but this run asks for {shard_size}; "
            f"leave --shard-size out to resume, or {fix}"
        )
    for key in ("max_length", "dtype"):
        if manifest["settings"].get(key) != settings[key]:
            raise UsageError(
                f"{manifest_path}: settings.{key} is {manifest['settings'].get(key)!r} but this run asks for "
                f"{settings[key]!r}; resume with the same settings, or {fix}"
            )


def _start_or_reuse(
    encoder: TextEncoder,
    corpus: str | Path,
    out: Path,
    *,
    world: int,
    shard_size: int | None,
    settings: dict,
    overwrite: bool,
    rank: int,
) -> dict:
    """The folder's manifest: a new one (after clearing the folder with `overwrite`), or the existing one, checked."""
    manifest_path = out / MANIFEST
    digest = corpus_digest(corpus)
    if overwrite and rank == 0 and manifest_path.exists():
        clear_folder(out)
    barrier()  # nobody reads the old manifest while the main process clears the folder
    if manifest_path.exists():
        manifest = read_manifest(out)
        _check_reuse(manifest, manifest_path, encoder, shard_size, settings, digest)
        return manifest
    total = count_corpus(corpus)
    size = shard_size or min(MAX_SHARD_SIZE, max(1, math.ceil(total / world)))
    manifest = {
        "format": 1,
        "fingerprint": encoder.fingerprint,
        "corpus_sha256": digest,
        "dim": encoder.dim,
        "num_passages": total,
        "shard_size": size,
        "num_shards": max(1, math.ceil(total / size)),
        "settings": settings,
    }
    # every rank computes the same plan; identical content, each written atomically, so the race is harmless
    _atomic_write_json(manifest_path, manifest)
    return manifest


def encode_to_folder(
    encoder: TextEncoder,
    corpus: str | Path,
    out_dir: str | Path,
    *,
    rank: int = 0,
    world: int = 1,
    max_length: int = 256,
    batch_size: int = 64,
    dtype: str = "fp32",
    shard_size: int | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Encode this rank's shards of `corpus` into `out_dir`, skipping finished ones (the same model, settings and
    corpus content, else refused; `overwrite` clears the folder first). Returns a summary of this rank; a reuse of
    finished shards is said on stderr by rank 0."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"max_length": max_length, "dtype": dtype, "corpus": str(Path(corpus).resolve())}
    manifest = _start_or_reuse(
        encoder, corpus, out, world=world, shard_size=shard_size, settings=settings, overwrite=overwrite, rank=rank
    )
    size, total = manifest["shard_size"], manifest["num_passages"]
    mine = shards_of_rank(manifest["num_shards"], rank, world)
    todo = [k for k in mine if not (out / f"{shard_name(k)}.done.json").exists() or _damaged_reuse(out, k, rank)]
    summary = {"rank": rank, "shards": list(mine), "skipped": len(mine) - len(todo), "encoded": 0, "seconds": 0.0}
    if rank == 0 and summary["skipped"]:
        print(
            f"reusing {summary['skipped']} finished shard(s) of rank 0 in {out} (same model {encoder.fingerprint}, "
            f"corpus sha256 {manifest['corpus_sha256'][:16]}..., max_length {max_length}, {dtype})",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    if todo:
        first, last = todo[0] * size, min(total, (todo[-1] + 1) * size)
        records = iter(itertools.islice(iter_corpus(corpus), first, last))
        position = first
        for k in range(todo[0], todo[-1] + 1):
            shard_start, shard_end = k * size, min(total, (k + 1) * size)
            batch = list(itertools.islice(records, shard_end - position))
            position = shard_end
            if k not in todo:
                continue
            if len(batch) != shard_end - shard_start:
                raise ValueError(f"{corpus}: expected {total} passages (manifest), the file ended early")
            started = time.perf_counter()
            meter = Throughput(len(batch), f"encode rank {rank} {shard_name(k)}", enabled=show_progress)
            vectors = encode_passages(
                encoder, batch, max_length=max_length, batch_size=batch_size, dtype=dtype, progress=meter
            )
            seconds = time.perf_counter() - started
            empty = sum(1 for r in batch if not (r["title"].strip() or r["text"].strip()))
            write_finished_shard(
                out, k, vectors, [r["id"] for r in batch],
                {
                    "empty_passages": empty,
                    "truncated_passages": count_truncated_passages(encoder, batch, max_length),
                    "seconds": seconds,
                    "passages_per_s": len(batch) / max(seconds, 1e-9),
                    "fingerprint": encoder.fingerprint,
                },
            )  # fmt: skip
            summary["encoded"] += len(batch)
            summary["seconds"] += seconds
    barrier()
    return summary


def write_finished_shard(out: Path, k: int, vectors: np.ndarray, ids: list[str], record: dict) -> None:
    """Shard `k`'s vectors and ids, then its done file (`record` + the count and both files' sha256), each atomic."""
    _atomic_save_npy(out / f"{shard_name(k)}.npy", vectors)
    _atomic_write_json(out / f"{shard_name(k)}.ids.json", ids)
    digests = {role: file_sha256(out / f"{shard_name(k)}{suffix}") for role, suffix in SHARD_FILES.items()}
    _atomic_write_json(out / f"{shard_name(k)}.done.json", {"count": len(ids), **record, "sha256": digests})


def _damaged_reuse(out: Path, k: int, rank: int) -> bool:
    """A finished shard that would be reused but fails its checksum: said, then encoded again."""
    problem = shard_damage(out, k)
    if problem is not None:
        print(f"encode rank {rank}: {problem}; encoding {shard_name(k)} again", file=sys.stderr, flush=True)
    return problem is not None


def _finished(out: Path) -> dict:
    """The manifest of a folder whose every shard is done; an unfinished encode is refused, naming the shards."""
    manifest = read_manifest(out)
    missing = [k for k in range(manifest["num_shards"]) if not (out / f"{shard_name(k)}.done.json").exists()]
    if missing:
        raise RuntimeError(
            f"{out}: encode unfinished, shards {missing[:10]} missing; rerun `lead-dist encode` to resume"
        )
    return manifest


def iter_shards(folder: str | Path, shard_indices: range | None = None) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(vectors, ids) of each shard; refuses an unfinished encode, naming the missing shards, and a damaged shard,
    naming the file."""
    out = Path(folder)
    manifest = _finished(out)
    indices = shard_indices if shard_indices is not None else range(manifest["num_shards"])
    for k in indices:
        contents = _verified(out, k)
        vectors, ids = _npy(contents["vectors"]), json.loads(contents["ids"].tobytes())
        if vectors.shape != (len(ids), manifest["dim"]):
            raise ValueError(
                f"{out / shard_name(k)}: {vectors.shape} vectors for {len(ids)} ids, dim {manifest['dim']}"
            )
        yield vectors, ids


def rank_shards(folder: str | Path, rank: int = 0, world: int = 1) -> RankPassages:
    """The shards `rank` owns (its contiguous block), loaded; refuses an unfinished encode like `iter_shards`."""
    manifest = read_manifest(folder)
    blocks = list(iter_shards(folder, shards_of_rank(manifest["num_shards"], rank, world)))
    return RankPassages([vectors for vectors, _ids in blocks], [ids for _vectors, ids in blocks])


def passage_ids(folder: str | Path) -> set[str]:
    """Every passage id of a finished embeddings folder (read from the ids files, not the vectors)."""
    out = Path(folder)
    return {
        pid
        for k in range(_finished(out)["num_shards"])
        for pid in json.loads(_verified(out, k, ("ids",))["ids"].tobytes())
    }


def empty_passages(folder: str | Path) -> int:
    out = Path(folder)
    return sum(json.loads(p.read_text())["empty_passages"] for p in sorted(out.glob("shard-*.done.json")))


def truncated_passages(folder: str | Path) -> int | None:
    """Passages the encode truncated, over every shard; None when a shard did not count them (an older encode)."""
    counts = [
        json.loads(p.read_text()).get("truncated_passages") for p in sorted(Path(folder).glob("shard-*.done.json"))
    ]
    return None if any(c is None for c in counts) else sum(counts)
