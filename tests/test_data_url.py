"""Training shards from URLs in one process: a real HTTP server on 127.0.0.1, `pipe:` commands and brace lists give
the batches of the local folder; a dropped connection is retried without duplicates; the last retry, a 404 and
bad forms fail with the URL in the message. (The 2-process launches are in test_data_url_multiprocess.py.)"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from test_data_fixtures import ShardServer, run_prepare, write_beir

from lead_dist.config import ConfigError, load_config
from lead_dist.data import shards
from lead_dist.data.errors import ShardError
from lead_dist.data.remote import records_with_retries
from lead_dist.data.shards import read_shard
from lead_dist.data.stream import TrainStream

NUM_QUERIES = 48  # 4 shards of 12


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("url")
    write_beir(root / "src", num_queries=NUM_QUERIES, num_passages=NUM_QUERIES)
    run_prepare("--format", "beir", "--input", root / "src", "--out", root / "out", "--shards", "4", "--no-corpus")
    return root / "out"


def batches(source: str | Path, **options: object) -> list[list[dict]]:
    settings = {"batch_size": 3, "num_negatives": 0, "seed": 4, "num_workers": 2, "retry_backoff_s": 0.0, **options}
    return list(TrainStream(source, **settings))  # type: ignore[arg-type]


def records_before_cut(shard: Path) -> int:
    """Members whose data ends inside the first half of the file: what a connection cut halfway delivers."""
    half = shard.stat().st_size // 2
    with tarfile.open(shard) as tar:
        return sum(1 for m in tar.getmembers() if m.offset_data + m.size <= half)


def test_url_pipe_and_lists_give_the_local_batches(prepared: Path) -> None:
    local = batches(prepared)
    assert sum(len(b) for b in local) == NUM_QUERIES - NUM_QUERIES % 3
    with ShardServer(prepared) as server:
        assert batches(server.url) == local
        assert batches(server.url + "/") == local
        assert batches(server.url + "/train-{000000..000003}.tar") == local
        explicit = batches(server.url + "/train-{000000..000003}.tar", manifest=f"{server.url}/manifest.json")
        assert explicit == local
    assert batches(f"pipe:cat {prepared}/{{name}}") == local
    assert batches(f"pipe:cat {prepared}/train-{{000000..000003}}.tar") == local
    assert batches(str(prepared) + "/train-{000000..000003}.tar") == local


def test_a_list_selects_shards_and_must_name_manifest_entries(prepared: Path) -> None:
    with ShardServer(prepared) as server:
        stream = TrainStream(server.url + "/train-{000001,000003}.tar", batch_size=3, num_negatives=0, seed=0)
        assert [name for name, _count in stream.shards] == ["train-000001.tar", "train-000003.tar"]
        assert stream.examples_per_epoch == 24
        with pytest.raises(ShardError, match=r"lists .*/train-000009\.tar, which names no training shard"):
            TrainStream(server.url + "/train-{000001,000009}.tar", batch_size=3, num_negatives=0, seed=0)


def test_a_dropped_connection_is_retried_from_the_start_without_duplicates(prepared: Path) -> None:
    local = batches(prepared, num_workers=0)
    with ShardServer(prepared, cut={"train-000002.tar": 2}) as server:
        # The probe (first 512 bytes) takes the first cut without noticing; the stream then meets the second cut.
        got = batches(server.url, num_workers=0, retries=2)
        assert server.requests.count("train-000002.tar") == 3  # probe, cut read, full read
    assert got == local  # the same examples in the same order: nothing repeated or lost
    qids = [e["qid"] for batch in got for e in batch]
    assert len(qids) == len(set(qids)) == NUM_QUERIES - NUM_QUERIES % 3


def test_the_last_retry_names_the_url_and_the_record(prepared: Path) -> None:
    shard = prepared / "train-000001.tar"
    delivered = records_before_cut(shard)
    assert 0 < delivered < 12
    waits: list[float] = []
    with ShardServer(prepared, cut={shard.name: 10}) as server:
        url = f"{server.url}/{shard.name}"
        reader = records_with_retries(url, 12, retries=3, backoff_s=0.5, sleep=waits.append)
        got = []
        with pytest.raises(ShardError, match=rf"{url}: reading failed at record {delivered} of 12 after 3 retries"):
            for record in reader:
                got.append(record)
        assert server.requests.count(shard.name) == 4
    assert waits == [0.5, 1.0, 2.0]  # exponential backoff
    assert got == list(read_shard(shard))[:delivered]  # each delivered record once, in order


def test_records_that_arrived_before_a_failure_are_delivered_to_a_slow_reader(
    prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reading command writes half the shard and fails; the reader is made slow by opening only once the command
    # has exited, so every byte waits in the pipe. Those records are delivered, then the failure is reported.
    shard = prepared / "train-000002.tar"
    half = shard.stat().st_size // 2
    assert half < 65536  # the whole half fits in a Linux pipe buffer, so the command can exit before any read
    arrived = records_before_cut(shard)
    expected = list(read_shard(shard))[:arrived]
    real_open = shards._open

    def open_after_exit(source: str | Path, where: str):  # noqa: ANN202
        stream = real_open(source, where)
        stream.proc.wait()
        return stream

    monkeypatch.setattr(shards, "_open", open_after_exit)
    got = []
    with pytest.raises(ShardError) as failure:
        for record in read_shard(f"pipe:head -c {half} {shard}; exit 18", expected_count=12):
            got.append(record)
    assert f"after {arrived} records" in str(failure.value) and "status 18" in str(failure.value)
    assert got == expected


def test_a_missing_manifest_or_shard_fails_at_construction_naming_the_url(prepared: Path, tmp_path: Path) -> None:
    with ShardServer(prepared) as server:
        with pytest.raises(ShardError, match=rf"{server.url}/missing/manifest\.json: cannot be read: .*HTTP error"):
            batches(server.url + "/missing")
        assert server.requests == ["manifest.json"]  # a 404 is not retried
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in prepared.iterdir():
        if path.name != "train-000003.tar":
            (copy / path.name).write_bytes(path.read_bytes())
    with ShardServer(copy) as server:
        with pytest.raises(ShardError, match=rf"shard {server.url}/train-000003\.tar: .*HTTP error"):
            TrainStream(server.url, batch_size=3, num_negatives=0, seed=0, retry_backoff_s=0)
        # Two ranks: each checks every second shard, so rank 1 finds it and rank 0 does not open it.
        TrainStream(server.url, batch_size=3, num_negatives=0, seed=0, rank=0, world_size=2)
        with pytest.raises(ShardError, match=r"train-000003\.tar"):
            TrainStream(server.url, batch_size=3, num_negatives=0, seed=0, rank=1, world_size=2)
        skipping = TrainStream(server.url, batch_size=3, num_negatives=0, seed=0, on_bad_shard="skip")
        assert [name for name, _reason in skipping.skipped_shards] == ["train-000003.tar"]


def test_a_file_that_is_not_a_manifest_is_named(prepared: Path, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("<html>a login page</html>")
    with ShardServer(tmp_path) as server:
        with pytest.raises(ShardError, match=rf"{server.url}/manifest\.json: not a manifest .*lead-dist prepare"):
            TrainStream(server.url, batch_size=3, num_negatives=0, seed=0)
    with pytest.raises(ShardError, match=r"/nowhere/manifest\.json: cannot be read"):
        TrainStream(f"pipe:cat {tmp_path}/nowhere/{{name}}", batch_size=3, num_negatives=0, seed=0, retries=0)


def test_a_corrupt_record_behind_a_url_is_not_retried(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in prepared.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    shard = copy / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[data.index(b"query number")] = ord("Q")  # same size: only the record's checksum can tell
    shard.write_bytes(bytes(data))
    with ShardServer(copy) as server:
        with pytest.raises(ShardError, match=r"train-000000\.tar.*checksum mismatch"):
            batches(server.url, num_workers=0, retries=3)
        assert server.requests.count("train-000000.tar") == 2  # the probe and one read


def test_resume_cursor_from_a_url_stream(prepared: Path) -> None:
    with ShardServer(prepared) as server:
        full = batches(server.url)
        first = TrainStream(server.url, batch_size=3, num_negatives=0, seed=4, num_workers=2)
        iterator = iter(first)
        for _ in range(5):
            next(iterator)
        state = first.state_dict()
        del iterator
        resumed = TrainStream(server.url, batch_size=3, num_negatives=0, seed=4, num_workers=2)
        resumed.load_state_dict(state)
        assert list(resumed) == full[5:]
    local = TrainStream(prepared, batch_size=3, num_negatives=0, seed=4, num_workers=2)
    local.load_state_dict(state)  # the cursor names shards, not where they are: it moves between locations
    assert list(local) == full[5:]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("pipe:cat /somewhere/train.tar", r"a pipe: command needs \{name\}"),
        ("nosuch://host/folder", r"webdataset cannot open nosuch: URLs"),
    ],
)
def test_forms_that_cannot_work_are_refused(source: str, message: str) -> None:
    with pytest.raises(ShardError, match=message):
        TrainStream(source, batch_size=1, num_negatives=0, seed=0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.retries=-1", r"data\.retries: must be >= 0, got -1"),
        ("data.retry_backoff_s=-0.5", r"data\.retry_backoff_s: must be >= 0, got -0\.5"),
        ("data.retry=2", r"unknown config key 'data\.retry'; did you mean 'data\.retries'\?"),
        ("data.manifets=x", r"did you mean 'data\.manifest'\?"),
    ],
)
def test_retry_keys_are_validated(tmp_path: Path, override: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "# lead-dist train c.yaml\nstage: warmup\ndata: {train: http://127.0.0.1:9/x}\n"
        "model: {config: {hidden_size: 8}, tokenizer: tok}\n"
    )
    assert load_config(config, []).data.retries == 3
    with pytest.raises(ConfigError, match=message):
        load_config(config, [override])
