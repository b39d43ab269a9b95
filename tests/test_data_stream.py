"""TrainStream in one process: exact epoch coverage, equal batch counts, per-epoch sampling, exact resume,
damaged shards. (The real 2-process launch is in test_data_multiprocess.py.)"""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_fixtures import run_prepare, write_beir

from lead_dist.data.errors import ShardError
from lead_dist.data.sampling import draw_negatives
from lead_dist.data.stream import TrainStream


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 queries in 4 shards of 12; query i has 1-3 positives and i % 6 negatives... all with at least one."""
    root = tmp_path_factory.mktemp("stream")
    positives = {f"q{i}": [f"p{(i + k) % 60}" for k in range(1 + i % 3)] for i in range(48)}
    write_beir(root / "src", num_queries=48, num_passages=60, positives=positives)
    lines = []
    for i in range(48):
        ranked = [f"p{(i + 10 + k) % 60}" for k in range(1 + i % 6)]
        lines += [f"q{i} Q0 {pid} {r + 1} {100 - r} run" for r, pid in enumerate(ranked)]
    (root / "run.trec").write_text("\n".join(lines) + "\n")
    run_prepare(
        "--format", "beir", "--input", root / "src", "--out", root / "out", "--shards", "4",
        "--negatives-run", root / "run.trec", "--depth", "1:100",
    )  # fmt: skip
    return root / "out"


def qids(batches: list[list[dict]]) -> list[str]:
    return [example["qid"] for batch in batches for example in batch]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_ranks_two_workers_cover_the_epoch_exactly_once(prepared: Path, num_workers: int) -> None:
    per_rank = []
    for rank in range(2):
        stream = TrainStream(
            prepared, batch_size=3, num_negatives=2, seed=5, rank=rank, world_size=2, num_workers=num_workers
        )
        batches = list(stream)
        assert len(batches) == stream.batches_per_epoch == 24 // 3  # 48 examples / 2 ranks / batch 3
        assert all(len(batch) == 3 for batch in batches)
        assert stream.examples_left_out_per_epoch == 0
        per_rank.append(qids(batches))
    everything = per_rank[0] + per_rank[1]
    assert sorted(everything) == sorted(f"q{i}" for i in range(48))  # each exactly once
    assert not set(per_rank[0]) & set(per_rank[1])


def test_uneven_epoch_is_counted_and_nothing_repeats(tmp_path: Path) -> None:
    write_beir(tmp_path / "src", num_queries=50, num_passages=50)
    run_prepare("--format", "beir", "--input", tmp_path / "src", "--out", tmp_path / "out", "--shards", "4")
    # shards of 13, 13, 12, 12: each rank gets two (24, 25 or 26 examples) -> 4 batches of 6 whatever the order.
    for epoch in range(3):
        seen = []
        for rank in range(2):
            stream = TrainStream(tmp_path / "out", batch_size=6, num_negatives=0, seed=0, rank=rank, world_size=2)
            stream.set_epoch(epoch)
            batches = list(stream)
            assert len(batches) == stream.batches_per_epoch == 4
            seen += qids(batches)
        assert len(seen) == len(set(seen)) == 48
        assert stream.examples_left_out_per_epoch == 50 - 48


def test_same_batch_count_on_every_rank_for_every_epoch(prepared: Path) -> None:
    for epoch in range(4):
        counts = set()
        for rank in range(3):  # 4 shards over 3 ranks: one rank holds two shards, the plan still equalises
            stream = TrainStream(prepared, batch_size=4, num_negatives=1, seed=1, rank=rank, world_size=3)
            stream.set_epoch(epoch)
            counts.add(len(list(stream)))
        assert counts == {3}  # the smallest rank part holds one shard of 12 examples = 3 batches of 4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_cursor_gives_the_identical_remaining_stream(prepared: Path, num_workers: int) -> None:
    def make() -> TrainStream:
        return TrainStream(prepared, batch_size=2, num_negatives=3, seed=9, num_workers=num_workers, shuffle_buffer=7)

    full = list(make())
    assert len(full) == 24
    for stop in (0, 1, 2, 5, 11, 23, 24):
        interrupted = make()
        iterator = iter(interrupted)
        for _ in range(stop):
            next(iterator)
        state = interrupted.state_dict()
        assert state["position"] == stop and state["epoch"] == 0
        resumed = make()
        resumed.load_state_dict(state)
        resumed.set_epoch(0)  # the training loop's own call must not reset the loaded cursor
        assert list(resumed) == full[stop:], f"stop={stop}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stop=st.integers(0, 30), epoch=st.integers(0, 3), buffer=st.integers(1, 50), batch=st.integers(1, 6))
def test_resume_property_any_stop_any_epoch(prepared: Path, stop: int, epoch: int, buffer: int, batch: int) -> None:
    def make() -> TrainStream:
        stream = TrainStream(prepared, batch_size=batch, num_negatives=2, seed=3, shuffle_buffer=buffer)
        stream.set_epoch(epoch)
        return stream

    full = list(make())
    stop = min(stop, len(full))
    resumed = make()
    resumed.load_state_dict({**make().state_dict(), "position": stop})
    assert list(resumed) == full[stop:]


def test_epochs_reshuffle_and_resample_negatives(prepared: Path) -> None:
    stream = TrainStream(prepared, batch_size=4, num_negatives=4, seed=2)
    epoch0 = [e for b in stream for e in b]
    stream.set_epoch(1)
    epoch1 = [e for b in stream for e in b]
    assert sorted(e["qid"] for e in epoch0) == sorted(e["qid"] for e in epoch1)
    assert [e["qid"] for e in epoch0] != [e["qid"] for e in epoch1]
    by_qid0, by_qid1 = ({e["qid"]: e for e in ep} for ep in (epoch0, epoch1))
    assert any(by_qid0[q]["neg_ids"] != by_qid1[q]["neg_ids"] for q in by_qid0)
    for example in epoch0:
        i = int(example["qid"][1:])
        listed = [f"p{(i + 10 + k) % 60}" for k in range(1 + i % 6)]  # the run-file list written above
        positives = {f"p{(i + k) % 60}" for k in range(1 + i % 3)}
        assert example["pos_id"] in positives
        assert example["pos_text"] == f"text of passage {example['pos_id'][1:]}"
        assert len(example["neg_ids"]) == 4 and set(example["neg_ids"]) <= set(listed) - positives
        available = [p for p in listed if p not in positives]
        counts = collections.Counter(example["neg_ids"])
        if len(available) >= 4:
            assert max(counts.values()) == 1  # sampled without replacement
        else:  # repeated when shorter: every listed negative appears floor or ceil of 4 / len times
            assert set(counts) == set(available)
            assert max(counts.values()) - min(counts.values()) <= 1


def test_sampling_does_not_depend_on_the_split(prepared: Path) -> None:
    alone = {e["qid"]: e for b in TrainStream(prepared, batch_size=4, num_negatives=3, seed=4) for e in b}
    split = {}
    for rank in range(2):
        stream = TrainStream(prepared, batch_size=4, num_negatives=3, seed=4, rank=rank, world_size=2, num_workers=2)
        split.update({e["qid"]: e for b in stream for e in b})
    assert alone == split


@given(length=st.integers(0, 12), n=st.integers(0, 20), seed=st.integers(0, 10**6))
def test_draw_negatives_counts(length: int, n: int, seed: int) -> None:
    chosen = draw_negatives(random.Random(seed), list(range(length)), n)
    if length == 0 or n == 0:
        assert chosen == []
        return
    assert len(chosen) == n and set(chosen) <= set(range(length))
    counts = collections.Counter(chosen)
    if length >= n:
        assert max(counts.values()) == 1
    else:
        assert set(counts) == set(range(length)) and set(counts.values()) <= {n // length, -(-n // length)}


def test_too_few_shards_for_ranks_times_workers_is_a_clear_error(prepared: Path) -> None:
    with pytest.raises(ShardError, match=r"4 usable training shards for 2 ranks x 4 workers.*--shards 8"):
        TrainStream(prepared, batch_size=2, num_negatives=0, seed=0, world_size=2, num_workers=4)


def test_resume_with_a_different_configuration_is_refused(prepared: Path) -> None:
    state = TrainStream(prepared, batch_size=2, num_negatives=1, seed=0).state_dict()
    with pytest.raises(ValueError, match="batch_size=2 but this stream has batch_size=3"):
        TrainStream(prepared, batch_size=3, num_negatives=1, seed=0).load_state_dict(state)


def copy_prepared(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_truncated_shard_is_named_or_skipped_and_counted(prepared: Path, tmp_path: Path) -> None:
    folder = copy_prepared(prepared, tmp_path / "copy")
    shard = folder / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(ShardError, match=r"train-000002\.tar.*truncated or replaced"):
        TrainStream(folder, batch_size=4, num_negatives=1, seed=0)
    stream = TrainStream(folder, batch_size=4, num_negatives=1, seed=0, on_bad_shard="skip")
    assert [name for name, _reason in stream.skipped_shards] == ["train-000002.tar"]
    assert stream.examples_per_epoch == 36 and len(qids(list(stream))) == 36


def test_corrupt_record_is_an_error_naming_the_shard(prepared: Path, tmp_path: Path) -> None:
    folder = copy_prepared(prepared, tmp_path / "copy")
    shard = folder / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    position = data.index(b"query number")  # inside a record's JSON, same size: only the checksum can tell
    data[position] = ord("Q")
    shard.write_bytes(bytes(data))
    for workers in (0, 2):
        with pytest.raises(ShardError, match=r"train-000001\.tar.*checksum mismatch"):  # also from a worker
            list(TrainStream(folder, batch_size=4, num_negatives=1, seed=0, num_workers=workers))
