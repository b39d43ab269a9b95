"""The at-scale runs of `python -m benchmarks.data` (benchmarks/data/).

1. Scaling (`measure_scaling`): `lead-dist prepare` on synthetic BEIR-layout corpora of growing size, each in a
fresh process, with its peak RSS (from the kernel's accounting of the finished child) and its speed.
2. URL streaming (`measure_url_streaming`): TrainStream epochs (records -> examples, no collation) from a prepared
synthetic folder, read from disk and from `http://127.0.0.1` (Python's `http.server` in its own process), in
interleaved rounds; the ratio of their rates is `http_over_local`.

The synthetic data (`write_synthetic_beir`): passages d0..d{N-1} of 40-80 words (MS MARCO's passages average 56)
drawn from a fixed 5,000-word vocabulary, titles of 2-5 words; a fixed number of queries (`--scale-queries`, 10,000
by default) whatever N, each with one or two positives spread over the whole corpus, and a TREC run of
`--scale-run-depth` (20) lines per query, positives among them; prepare keeps positions 2..20 as negatives. Queries
stay fixed so that the run measures what grows with the corpus; the TREC run reader keeps the whole run in memory
(`readers/trec_run.py`), a cost that grows with queries x depth, not with the corpus.

Everything of the scaling run is written under one folder (default: a temporary folder; `--scale-dir` to choose, e.g. a disk with
room: 4M passages take about 1.6 GB of input, 2 GB of scratch store and 5 GB of corpus shards) and removed after
each size.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.fixtures import folder_bytes, random_words, write_beir
from benchmarks.harness.launch import PEAK, free_port, run_with_peak_rss
from benchmarks.harness.timing import interleaved_rounds

VOCABULARY_SIZE = 5000
SEED = 20261127


def write_synthetic_beir(folder: Path, passages: int, queries: int, run_depth: int) -> dict[str, Any]:
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/train.tsv) and run.trec; returns what was written."""
    rng = random.Random(SEED + passages)
    words = random_words(random.Random(SEED), VOCABULARY_SIZE, (3, 10))
    stride = max(1, passages // queries)
    positives = {q: [(q * stride) % passages] + ([(q * stride + 1) % passages] if q % 3 == 0 else [])
                 for q in range(queries)}  # fmt: skip
    corpus = (
        (
            f"d{i}",
            " ".join(rng.choices(words, k=rng.randint(2, 5))),
            " ".join(rng.choices(words, k=rng.randint(40, 80))),
        )
        for i in range(passages)
    )
    texts = ((f"q{q}", " ".join(rng.choices(words, k=rng.randint(4, 12)))) for q in range(queries))
    write_beir(folder, corpus, texts, {"train": ((f"q{q}", f"d{p}") for q, pids in positives.items() for p in pids)})
    with (folder / "run.trec").open("w", encoding="utf-8") as handle:
        for q, pids in positives.items():
            ranked = pids[:1] + [rng.randrange(passages) for _ in range(run_depth - 1)]
            handle.writelines(f"q{q} Q0 d{p} {r} {100.0 - r} synthetic\n" for r, p in enumerate(ranked, start=1))
    return {"passages": passages, "queries": queries, "run_lines": queries * run_depth, "bytes": folder_bytes(folder)}


def prepare_command(source: Path, out: Path, run_depth: int) -> list[str]:
    """`lead-dist prepare` on a synthetic folder, run by `benchmarks.harness.peak` (which prints its VmHWM)."""
    return [
        *PEAK, "prepare", "--format", "beir", "--input", str(source),
        "--split", "train", "--out", str(out), "--negatives-run", str(source / "run.trec"),
        "--depth", f"2:{run_depth}",
    ]  # fmt: skip


def measure_size(work: Path, passages: int, queries: int, run_depth: int, log: Any) -> dict[str, Any]:
    """Generate one corpus, prepare it once in a fresh process, delete both; peak RSS and speed."""
    source, out = work / f"beir-{passages}", work / f"shards-{passages}"
    started = time.perf_counter()
    written = write_synthetic_beir(source, passages, queries, run_depth)
    log(f"synthetic corpus of {passages:,} passages: {written['bytes'] / 2**20:,.0f} MiB in "
        f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    try:
        load = [round(v, 2) for v in os.getloadavg()]
        seconds, cpu, peak = run_with_peak_rss(prepare_command(source, out, run_depth))
        manifest = json.loads((out / "manifest.json").read_text())
        output_bytes = folder_bytes(out)
    finally:
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    log(f"prepare {passages:,} passages: {seconds:.0f} s, peak RSS {peak / 2**20:,.0f} MiB")
    return {
        "passages": passages,
        "queries": queries,
        "run_lines": written["run_lines"],
        "input_bytes": written["bytes"],
        "output_bytes": output_bytes,
        "training_examples": manifest["num_queries"],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "passages_per_second": round(passages / seconds, 1),
        "passages_per_cpu_second": round(passages / cpu, 1),
        "peak_rss_bytes": peak,
        "peak_rss_mib": round(peak / 2**20, 1),
        "load_average_before": load,
    }


def measure_scaling(sizes: list[int], queries: int, run_depth: int, folder: Path | None, log: Any) -> dict[str, Any]:
    """Every size in turn (smallest first), and the RSS ratio of the largest to the smallest."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lead_dist_scale_", dir=folder) as work:
        runs = [measure_size(Path(work), n, queries, run_depth, log) for n in sorted(sizes)]
    smallest, largest = runs[0], runs[-1]
    return {
        "runs": runs,
        "rss_largest_over_smallest": round(largest["peak_rss_bytes"] / smallest["peak_rss_bytes"], 3),
        "sizes": [run["passages"] for run in runs],
        "queries": queries,
        "run_depth": run_depth,
        "command": "lead-dist " + " ".join(prepare_command(Path("BEIR"), Path("OUT"), run_depth)[3:]),
        "peak_rss": "VmHWM of the prepare process (/proc/self/status at its end)",
    }


def _serve(folder: Path) -> tuple[subprocess.Popen, str]:
    """`python -m http.server` on 127.0.0.1 in its own process (not a thread of the measuring one)."""
    import urllib.request

    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/manifest.json", timeout=1).read()
            return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{' '.join(command)} did not answer")


def measure_url_streaming(
    work: Path, passages: int, queries: int, run_depth: int, rounds: int, batch_size: int, log: Any
) -> dict[str, Any]:
    """Rates of whole epochs from the local folder and from its URL, interleaved; http_over_local is the median
    over rounds of each round's ratio. The streams are built once (the manifest read and the shard probes of the
    URL's start-up are not in the timings: they happen once per run, not per epoch)."""
    from lead_dist.data.stream import TrainStream

    source, out = work / "url-beir", work / "url-shards"
    write_synthetic_beir(source, passages, queries, run_depth)
    run_with_peak_rss(prepare_command(source, out, run_depth) + ["--no-corpus"])
    server, url = _serve(out)
    try:
        streams = {
            "local folder": TrainStream(out, batch_size=batch_size, num_negatives=3, seed=0),
            "http://127.0.0.1": TrainStream(url, batch_size=batch_size, num_negatives=3, seed=0),
        }

        def epoch_of(stream: Any) -> Any:
            def run() -> int:
                stream.set_epoch(stream.epoch + 1)
                return sum(len(batch) for batch in stream)

            return run

        measured = interleaved_rounds({name: epoch_of(s) for name, s in streams.items()}, rounds, unit="examples")
    finally:
        server.kill()
        server.wait()
    http = measured["http://127.0.0.1"]
    log(f"http over local: {http['ratio_to_reference_median_of_rounds']} (per CPU second "
        f"{http.get('ratio_to_reference_per_cpu_second')})")  # fmt: skip
    shards = json.loads((out / "manifest.json").read_text())["shards"]["train"]
    return {
        **measured,
        "http_over_local": http["ratio_to_reference_median_of_rounds"],
        "examples_per_epoch": streams["local folder"].examples_per_epoch,
        "train_shards": len(shards),
        "train_shard_bytes": sum(s["bytes"] for s in shards),
        "negatives_per_example": 3,
        "server": "python -m http.server (separate process), read through webdataset's gopen (curl)",
    }
