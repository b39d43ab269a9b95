"""TrainStream: this rank's batches of training examples, streamed from prepared shards.

How an epoch is laid out (all of it derived from (seed, epoch), so every rank computes the same plan):
1. The shard list is permuted with a generator seeded by (seed, epoch).
2. Split by node: rank r takes permuted shards r, r + world_size, ...
3. Split by worker: each of the W = max(1, num_workers) *logical* workers of a rank takes every W-th of its
   rank's shards. Each (rank, worker) part streams its shards in order through a shuffle buffer seeded by
   (seed, epoch, rank, worker), and draws a positive and negatives per example (see sampling.py).
4. Every part yields the same number of batches: floor(smallest part / batch_size). So every rank has
   `batches_per_epoch = W * that` batches, and collectives never wait on a rank that ran dry. Examples past that
   count in a part are left out of this epoch (counted in `examples_left_out_per_epoch`; which ones changes with
   the epoch's shard order and shuffle). Prepare writes shards whose sizes differ by at most one, so with
   shards a multiple of world_size x W and a part size divisible by batch_size nothing is left out and every
   example is seen exactly once per epoch.
5. Batch i of the rank is the (i // W)-th batch of logical worker i % W: the DataLoader's round-robin order.

Resume: `position` counts the batches handed out this epoch. Restarting at position p, DataLoader worker d plays
logical worker (p + d) % W and skips the batches it already gave, so the DataLoader's round robin continues with
batch p, p + 1, ... exactly as the uninterrupted run. Shards are re-read from their start to skip (no seeking).

Where the shards are: `shards` is a local folder, a folder URL, a `pipe:` command or a brace-expanded shard list
(location.py); files are opened and their tars read through webdataset (shards.py). Behind a URL, a shard whose
transfer fails mid-way is read again from its start up to `retries` times and the records already yielded are
skipped (remote.py), so the plan, the resume cursor and the per-record checksums are the same as for local files.

Damaged shards: a local shard whose size differs from the manifest (a shard behind a URL that cannot be opened or
is no tar) is an error, or with on_bad_shard="skip" left out of the plan on every rank alike (the same files give
the same decision) and listed in `skipped_shards`. Damage found while reading (checksum, truncation, a failed last
retry) is always a ShardError naming the shard: skipping then would leave this rank short of batches and hang the
others.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lead_dist.data.errors import ShardError
from lead_dist.data.location import parse_location
from lead_dist.data.manifest import file_sha256
from lead_dist.data.remote import probe_shard, read_manifest_at, records_with_retries, remote_sha256
from lead_dist.data.sampling import sample_example
from lead_dist.data.shards import read_shard


def _identity(item: Any) -> Any:
    return item


def _worker_context() -> str | None:
    """ "fork" on Linux: a rank started with the spawn method (torch.multiprocessing.spawn) would otherwise also
    spawn its workers, re-importing torch in each (about 5 s per worker and epoch on a small CPU). The workers only
    read files, so forking is safe even after CUDA or gloo are initialised in the parent."""
    return "fork" if sys.platform.startswith("linux") else None


class TrainStream:
    def __init__(
        self,
        shards: str | Path,
        *,
        batch_size: int,
        num_negatives: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        on_bad_shard: str = "error",
        verify_checksums: bool = False,
        manifest: str | None = None,
        retries: int = 3,
        retry_backoff_s: float = 1.0,
    ) -> None:
        if batch_size < 1 or num_negatives < 0 or shuffle_buffer < 1 or num_workers < 0:
            raise ValueError(
                f"TrainStream: expected batch_size >= 1, num_negatives >= 0, shuffle_buffer >= 1, num_workers >= 0; "
                f"got {batch_size}, {num_negatives}, {shuffle_buffer}, {num_workers}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"TrainStream: rank {rank} outside world_size {world_size}")
        if on_bad_shard not in ("error", "skip"):
            raise ValueError(f"TrainStream: on_bad_shard={on_bad_shard!r}; expected 'error' or 'skip'")
        if retries < 0 or retry_backoff_s < 0:
            raise ValueError(
                f"TrainStream: expected retries >= 0 and retry_backoff_s >= 0, got {retries}, {retry_backoff_s}"
            )
        self.location = parse_location(str(shards), manifest)
        self.folder = self.location.text  # what error messages name
        self.batch_size, self.num_negatives, self.seed = batch_size, num_negatives, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.shuffle_buffer = shuffle_buffer
        self.retries, self.retry_backoff_s = (0, 0.0) if self.location.is_local else (retries, retry_backoff_s)
        manifest_data = read_manifest_at(self.location, retries=self.retries, backoff_s=self.retry_backoff_s)
        described = manifest_data["shards"]["train"]
        if self.location.kind == "list":
            described = self.location.shards_in_list(described)
        self.manifest_entries: list[dict] = described  # name, count, sha256 of each shard given (a resume compares)
        self.has_negatives = bool(manifest_data.get("has_negatives"))
        self.skipped_shards: list[tuple[str, str]] = []
        self.shards = self._usable_shards(described, on_bad_shard, verify_checksums)
        parts = self.world_size * self.logical_workers
        if not self.shards:
            raise ShardError(f"{self.folder}: no usable training shards (the prepared split has no training examples)")
        if len(self.shards) < parts:
            raise ShardError(
                f"{self.folder}: {len(self.shards)} usable training shards for {self.world_size} ranks x "
                f"{self.logical_workers} workers; every worker needs a shard: re-run prepare with --shards {parts} "
                "(or a multiple of it)"
            )
        self.epoch = 0
        self.position = 0

    def _usable_shards(self, described: list[dict], on_bad_shard: str, verify: bool) -> list[tuple[str, int]]:
        """(name, record count) of every shard to stream. Local files are checked against the manifest's size;
        behind a URL each shard is opened and its first header read (every shard on every rank with
        on_bad_shard="skip", so that all ranks decide alike; otherwise each rank checks every world_size-th)."""
        usable = []
        for index, entry in enumerate(described):
            if self.location.is_local:
                problem = _local_problem(Path(self.location.url(entry["name"])), entry, verify)
            elif on_bad_shard == "skip" or index % self.world_size == self.rank:
                problem = self._remote_problem(entry, verify)
            else:
                problem = None
            if problem is None:
                usable.append((entry["name"], int(entry["count"])))
            elif on_bad_shard == "skip":
                self.skipped_shards.append((entry["name"], problem))
            else:
                raise ShardError(
                    f"shard {self.location.url(entry['name'])}: {problem}; set data.on_bad_shard=skip to leave it out"
                )
        return usable

    def _remote_problem(self, entry: dict, verify: bool) -> str | None:
        url = self.location.url(entry["name"])
        problem = probe_shard(url, retries=self.retries, backoff_s=self.retry_backoff_s)
        if problem is None and verify and remote_sha256(url, self.retries, self.retry_backoff_s) != entry["sha256"]:
            problem = "sha256 differs from the manifest (corrupt)"
        return problem

    def records(self, name: str, count: int) -> Iterator[dict]:
        """One shard's records in order, each once (retried from the shard's start when a URL fails mid-way)."""
        url = self.location.url(name)
        if self.location.is_local:
            return read_shard(url, expected_count=count)
        return records_with_retries(url, count, retries=self.retries, backoff_s=self.retry_backoff_s)

    @property
    def logical_workers(self) -> int:
        return max(1, self.num_workers)

    def _plan(self, epoch: int) -> list[list[list[tuple[str, int]]]]:
        """plan[rank][worker] = the shards that part streams, for this epoch."""
        order = list(range(len(self.shards)))
        random.Random(f"lead_dist.shards:{self.seed}:{epoch}").shuffle(order)
        permuted = [self.shards[i] for i in order]
        plan = []
        for rank in range(self.world_size):
            own = permuted[rank :: self.world_size]
            plan.append([own[w :: self.logical_workers] for w in range(self.logical_workers)])
        return plan

    def _batches_per_part(self, plan: list[list[list[tuple[str, int]]]]) -> int:
        return min(sum(count for _name, count in part) for rank in plan for part in rank) // self.batch_size

    @property
    def batches_per_epoch(self) -> int:
        return self.logical_workers * self._batches_per_part(self._plan(self.epoch))

    @property
    def examples_per_epoch(self) -> int:
        return sum(count for _name, count in self.shards)

    @property
    def examples_left_out_per_epoch(self) -> int:
        """Examples (over all ranks) not yielded this epoch so that every rank has the same batch count."""
        return self.examples_per_epoch - self.world_size * self.batches_per_epoch * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` at position 0; the current epoch keeps its cursor (so a loaded state survives the
        training loop's own set_epoch call)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "num_negatives": self.num_negatives,
            "shards": [name for name, _count in self.shards],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the cursor; the stream must be configured as the one that saved it, or resume is not exact."""
        for key in ("seed", "world_size", "num_workers", "batch_size", "num_negatives"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"TrainStream.load_state_dict: saved {key}={state[key]} but this stream has "
                    f"{key}={getattr(self, key)}; an exact resume needs the same {key}"
                )
        if "shards" in state and state["shards"] != [name for name, _count in self.shards]:
            raise ValueError("TrainStream.load_state_dict: the saved stream used a different set of shards")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def __iter__(self) -> Iterator[Any]:
        total = self.batches_per_epoch
        part = _EpochPart(self, self.epoch, self.position)
        if self.num_workers == 0:
            batches: Iterator[Any] = part.round_robin()
        else:
            loader = DataLoader(
                part,  # type: ignore[arg-type]
                batch_size=None,
                num_workers=self.num_workers,
                collate_fn=_identity,
                multiprocessing_context=_worker_context(),
            )
            batches = iter(loader)
        for batch in batches:
            if self.position >= total:
                raise ShardError(f"{self.folder}: stream yielded more than {total} batches (shards changed on disk?)")
            self.position += 1  # counted before handing out: a state saved after this batch resumes after it
            yield batch
        if self.position != total:
            raise ShardError(
                f"{self.folder}: epoch {self.epoch} ended after {self.position} of {total} batches (shards changed?)"
            )


class _EpochPart(IterableDataset):
    """The batches of one rank for one epoch, from `start` on; inside a DataLoader worker, that worker's share."""

    def __init__(self, stream: TrainStream, epoch: int, start: int) -> None:
        super().__init__()
        self.stream, self.epoch, self.start = stream, epoch, start
        self.plan = stream._plan(epoch)
        self.per_part = stream._batches_per_part(self.plan)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if info is None:
            return self.round_robin()
        # DataLoader worker d hands out the rank's batches start + d, start + d + W, ...: logical worker (start+d)%W.
        torch.set_num_threads(1)
        return self._logical_worker((self.start + info.id) % self.stream.logical_workers)

    def round_robin(self) -> Iterator[Any]:
        """All logical workers interleaved in the DataLoader's order, in this process (num_workers=0)."""
        workers = self.stream.logical_workers
        generators = {w: self._logical_worker(w) for w in range(workers)}
        for index in range(self.start, workers * self.per_part):
            yield next(generators[index % workers])

    def _logical_worker(self, worker: int) -> Iterator[Any]:
        stream = self.stream
        workers = stream.logical_workers
        skip = max(0, -(-(self.start - worker) // workers))  # batches of this worker among the first `start`
        shards = self.plan[stream.rank][worker]
        rng = random.Random(f"lead_dist.shuffle:{stream.seed}:{self.epoch}:{stream.rank}:{worker}")
        made = 0
        batch: list[dict] = []
        for record in _shuffled(stream, shards, rng):
            batch.append(record)
            if len(batch) < stream.batch_size:
                continue
            if made >= skip:
                yield [
                    sample_example(r, seed=stream.seed, epoch=self.epoch, num_negatives=stream.num_negatives)
                    for r in batch
                ]
            made += 1
            batch = []
            if made == self.per_part:
                return


def _local_problem(path: Path, entry: dict, verify: bool) -> str | None:
    if not path.is_file():
        return "missing"
    if path.stat().st_size != entry["bytes"]:
        return f"{path.stat().st_size} bytes, manifest says {entry['bytes']} (truncated or replaced)"
    if verify and file_sha256(path) != entry["sha256"]:
        return "sha256 differs from the manifest (corrupt)"
    return None


def _shuffled(stream: TrainStream, shards: list[tuple[str, int]], rng: random.Random) -> Iterator[dict]:
    """Records of the shards in order, mixed through a buffer of `stream.shuffle_buffer` (deterministic given rng)."""
    buffer_size = stream.shuffle_buffer
    buffer: list[dict] = []
    for name, count in shards:
        for record in stream.records(name, count):
            if len(buffer) < buffer_size:
                buffer.append(record)
                continue
            index = rng.randrange(buffer_size)
            buffer[index], record = record, buffer[index]
            yield record
    rng.shuffle(buffer)
    yield from buffer
