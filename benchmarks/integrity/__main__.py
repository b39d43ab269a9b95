"""What checking stored artefacts against their sha256 costs when they are read (issue 21).

    .venv/bin/python -m benchmarks.integrity                          # about 1.1 GB of synthetic files, a few minutes
    .venv/bin/python -m benchmarks.integrity --passages 20000 --texts 5000 --rounds 2   # a quick look

Two readers, each timed against the same read without the check, in interleaved rounds on the same files:
- an embeddings folder as `lead-dist search` / `evaluate` read it (`store.rank_shards`: every shard's vectors and
  ids checked against the sha256 of its done file), against `np.load` + the ids file of each shard;
- a teacher cache as training opens it (`format.read_verified_shard`: one read, hashed in memory, then parsed),
  against `format.read_shard` of every shard (the read before the check).
Sizes: an MS MARCO-scale shard of embeddings (100,000 x 768 fp32, 307 MB; the default `--passages 200000` makes
two), and a DE cache of a 12-layer 768-wide teacher in fp16 (20 kB per text; `--texts 25000` is 499 MB, in shards
of 4,096 entries as `cache-teacher` writes them). The files are read from the page cache (just written, memory to
spare): the worst case for the ratio, since a read from disk costs more while the hashing stays the same.
Writes benchmarks/results/integrity.json and integrity.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness.machine import log, machine, package_versions
from benchmarks.harness.results import BarPanel, write_bar_chart, write_json
from benchmarks.harness.timing import interleaved_rounds
from lead_dist.retrieval import store
from lead_dist.teacher_cache import format as cache_format

DIM, LAYERS, WIDTH = 768, 12, 768


def embeddings_folder(root: Path, passages: int, shard_size: int) -> Path:
    """A finished embeddings folder of random unit vectors, written by the store's own shard writer."""
    out = root / "embeddings"
    out.mkdir()
    num_shards = -(-passages // shard_size)
    manifest = {"format": 1, "fingerprint": "synthetic", "corpus_sha256": "synthetic", "dim": DIM,
                "num_passages": passages, "shard_size": shard_size, "num_shards": num_shards, "settings": {}}  # fmt: skip
    (out / store.MANIFEST).write_text(json.dumps(manifest))
    rng = np.random.default_rng(0)
    for k in range(num_shards):
        count = min(shard_size, passages - k * shard_size)
        vectors = rng.standard_normal((count, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.write_finished_shard(out, k, vectors, [f"p{k}-{i}" for i in range(count)], {"empty_passages": 0})
    return out


def teacher_cache(root: Path, texts: int, shard_size: int) -> tuple[Path, list[dict]]:
    """DE shards (final [M, D], layers [M, N, D] in fp16) written by the cache's own writer; their manifest entries."""
    out = root / "cache"
    out.mkdir()
    generator, shards = torch.Generator().manual_seed(0), []
    for index, start in enumerate(range(0, texts, shard_size)):
        count = min(shard_size, texts - start)
        tensors = {
            "final": torch.randn(count, WIDTH, generator=generator).half(),
            "layers": torch.randn(count, LAYERS, WIDTH, generator=generator).half(),
        }
        name = f"passage-{index:06d}.safetensors"
        digest = cache_format.write_shard(out / name, [f"p{start + i}" for i in range(count)], tensors)
        shards.append({"name": name, "sha256": digest, "count": count})
    return out, shards


def folder_bytes(folder: Path, suffixes: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(suffixes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=200_000, help="embeddings: passages (768-dim fp32)")
    parser.add_argument("--texts", type=int, default=25_000, help="teacher cache: texts (12 x 768 fp16 each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--results", default="integrity", help="name of the JSON / PNG under benchmarks/results/")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp:
        root = Path(tmp)
        log(f"writing {args.passages} embeddings and a cache of {args.texts} texts under {root}")
        embeddings = embeddings_folder(root, args.passages, store.MAX_SHARD_SIZE)
        cache, shards = teacher_cache(root, args.texts, 4096)

        def plain_embeddings() -> int:  # what rank_shards did before the check: every shard held at once
            blocks = [
                (np.load(embeddings / f"{store.shard_name(k)}.npy"),
                 json.loads((embeddings / f"{store.shard_name(k)}.ids.json").read_text()))
                for k in range(store.read_manifest(embeddings)["num_shards"])
            ]  # fmt: skip
            return sum(len(vectors) for vectors, _ids in blocks)

        def verified_embeddings() -> int:
            return sum(len(v) for v in store.rank_shards(embeddings).vectors)

        def plain_cache() -> int:
            return sum(len(cache_format.read_shard(cache / s["name"])[0]) for s in shards)

        def verified_cache() -> int:
            return sum(len(cache_format.read_verified_shard(cache / s["name"], s["sha256"])[0]) for s in shards)

        sizes = {
            "embeddings_bytes": folder_bytes(embeddings, (".npy", ".ids.json")),
            "teacher_cache_bytes": folder_bytes(cache, (".safetensors",)),
        }
        results = {
            "embeddings": interleaved_rounds(
                {"read": plain_embeddings, "read + sha256 check": verified_embeddings}, args.rounds, "passages"
            ),
            "teacher_cache": interleaved_rounds(
                {"read": plain_cache, "read + sha256 check": verified_cache}, args.rounds, "texts"
            ),
        }
    payload = {"machine": machine(), "packages": package_versions("numpy", "torch", "safetensors"), "args": vars(args),
               "sizes": sizes, "results": results}  # fmt: skip
    for part, numbers in results.items():
        ratio = numbers["read + sha256 check"]["ratio_to_reference_median_of_rounds"]
        seconds = min(numbers["read + sha256 check"]["seconds"])
        extra = seconds - min(numbers["read"]["seconds"])
        gigabytes = sizes[f"{part}_bytes" if part == "teacher_cache" else "embeddings_bytes"] / 1e9
        payload[f"{part}_summary"] = {"gigabytes": round(gigabytes, 3), "throughput_ratio_checked_over_plain": ratio,
                                      "extra_seconds_per_gigabyte": round(extra / gigabytes, 3)}  # fmt: skip
        log(f"{part}: {gigabytes:.2f} GB, checked/plain throughput {ratio}, +{extra / gigabytes:.2f} s per GB")
    print(write_json(args.results, payload))
    panels = [
        BarPanel(
            title=f"{part.replace('_', ' ')} ({payload[f'{part}_summary']['gigabytes']} GB)",
            ylabel="GB read per second (median of rounds)",
            labels=list(numbers),
            values=[
                n["median_per_second"] * payload[f"{part}_summary"]["gigabytes"] / args_count for n in numbers.values()
            ],
            value_format="{:.2f}",
        )
        for part, numbers, args_count in (
            ("embeddings", results["embeddings"], args.passages),
            ("teacher_cache", results["teacher_cache"], args.texts),
        )
    ]
    print(write_bar_chart(args.results, panels, title="Reading stored artefacts with and without the sha256 check",
                          footnote=f"{machine()['cpu_model']}, 1 thread, page cache warm"))  # fmt: skip


if __name__ == "__main__":
    main()
