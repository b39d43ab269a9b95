"""Damage and hostile input give one clear line (issue 21, MIXED items): a file that is not UTF-8 is named with the
byte offset; a full disk names the file and the bytes needed; repeated YAML keys, empty qrels and empty corpora
are refused by file; two prepares into one --out meet the lock; a killed prepare's leftovers go; --debug adds
the traceback to every refusal; a refused connection is one line with the URL, not curl's command line."""

from __future__ import annotations

import errno
import json
import socket
import sqlite3
from pathlib import Path

import pytest
from test_data_fixtures import write_beir

from lead_dist.cli import main as cli_main
from lead_dist.lockfile import LOCK_NAME

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"


def _one_line(capsys, *argv: object) -> str:
    code = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def _prepare(data: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "--format", "beir", "--input", str(data), "--out", str(out), *extra]


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    write_beir(tmp_path / "data", num_queries=4, num_passages=6)
    return tmp_path / "data"


# ---------------------------------------------------------------------------------------------------------------
# Not UTF-8: the file and the byte offset


def test_a_config_that_is_not_utf8_names_the_file_and_offset(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"stage: warmup\noutput_dir: r\xe9sultats\n")  # Latin-1 e-acute: bytes 0-13, 14-26, 27
    err = _one_line(capsys, "train", config)
    expected = (
        f"{config}: not UTF-8 text: byte offset 27 (byte 0xe9, invalid continuation byte); save the file as UTF-8"
    )
    assert err == f"lead-dist train: config error: {expected}", err


def test_a_corpus_that_is_not_utf8_names_the_file_line_and_offset(tmp_path, beir, tiny_bert_dir, capsys):
    corpus = beir / "corpus.jsonl"
    good = corpus.read_bytes()
    corpus.write_bytes(good + b'{"_id": "x", "text": "caf\xe9"}\n')
    offset = len(good) + len(b'{"_id": "x", "text": "caf')
    err = _one_line(capsys, "encode", "--model", tiny_bert_dir, "--corpus", beir, "--out", tmp_path / "e", "--quiet")
    assert f"{corpus}:7: expected UTF-8 text (invalid continuation byte at byte offset {offset} of the file)" in err


def test_a_lock_file_that_is_not_utf8_names_the_file_and_offset(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_bytes(b'{"host": "h\xff"}')
    shards = tmp_path / "shards"
    assert cli_main(["prepare", "--format", "demo", "--out", str(shards)]) == 0
    capsys.readouterr()
    err = _one_line(capsys, "train", TINY, f"data.train={shards}", f"output_dir={out}")
    assert f"unreadable lock file ({out / LOCK_NAME}: not UTF-8 text: byte offset 11 (byte 0xff" in err, err


# ---------------------------------------------------------------------------------------------------------------
# A full disk: the file and the bytes needed


class _FullDisk:
    """`open` for lead_dist.atomic whose files take `room` bytes, then fail with ENOSPC like a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, path, mode="r", **kwargs):
        handle = open(path, mode, **kwargs)  # noqa: SIM115 (returned to the caller's with block)
        disk = self

        class Limited:
            def write(self, data):
                if len(data) > disk.room:
                    raise OSError(errno.ENOSPC, "No space left on device")
                disk.room -= len(data)
                return handle.write(data)

            def __getattr__(self, name):
                return getattr(handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

        return Limited()


def test_a_full_disk_while_preparing_names_the_shard_and_the_bytes_needed(tmp_path, beir, capsys, monkeypatch):
    import lead_dist.atomic

    inputs = sum(p.stat().st_size for p in (beir / "corpus.jsonl", beir / "queries.jsonl", beir / "qrels/train.tsv"))
    monkeypatch.setattr(lead_dist.atomic, "open", _FullDisk(room=600), raising=False)
    out = tmp_path / "shards"
    err = _one_line(capsys, *_prepare(beir, out))
    assert "train-000000.tar: no space left on the device: " in err, err
    assert f"prepare needs about {2 * inputs} bytes beside --out {out} (twice its inputs' {inputs} bytes)" in err
    assert "bytes are free in " in err and "Errno" not in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["data"]  # nothing left behind


def test_a_full_disk_in_the_join_store_names_the_bytes_needed(tmp_path, beir, capsys, monkeypatch):
    from lead_dist.data import store

    def full(*_args):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store.PrepareStore, "add_passage", full)
    err = _one_line(capsys, *_prepare(beir, tmp_path / "shards"))
    assert "no space left on the device: prepare needs about" in err, err


def test_a_full_disk_writing_one_file_names_it_and_its_size(tmp_path, monkeypatch):
    import lead_dist.atomic
    from lead_dist.atomic import DiskFullError, atomic_write_text

    monkeypatch.setattr(lead_dist.atomic, "open", _FullDisk(room=10), raising=False)
    target = tmp_path / "results.json"
    with pytest.raises(DiskFullError) as caught:
        atomic_write_text(target, "x" * 100)
    assert str(caught.value).startswith(f"{target}: no space left on the device: it needs 100 bytes; ")
    assert list(tmp_path.iterdir()) == []  # the temporary file went too


# ---------------------------------------------------------------------------------------------------------------
# Configs, empty inputs


def test_a_repeated_yaml_section_is_refused(tmp_path):
    from lead_dist.config import ConfigError, load_config

    config = tmp_path / "twice.yaml"
    config.write_text(TINY.read_text() + "\ntrain:\n  max_steps: 1\n")
    first = next(n for n, line in enumerate(TINY.read_text().splitlines(), 1) if line.startswith("train:"))
    second = len(TINY.read_text().splitlines()) + 2
    with pytest.raises(ConfigError, match=rf"line {second}: key 'train' repeats the one on line {first}"):
        load_config(config)


@pytest.mark.parametrize("empty", ["qrels/test.tsv", "corpus.jsonl"])
def test_evaluate_refuses_an_empty_qrels_file_or_corpus(tmp_path, beir, tiny_bert_dir, capsys, empty):
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tp0\t1\n")
    (beir / empty).write_text("query-id\tcorpus-id\tscore\n" if empty.startswith("qrels") else "\n")
    err = _one_line(capsys, "evaluate", "--model", tiny_bert_dir, "--data", beir, "--out", tmp_path / "r.json")
    what = "no judgements (an empty qrels file)" if empty.startswith("qrels") else "an empty corpus (no passages)"
    assert f"lead-dist evaluate: error: {beir / empty}: {what}" in err, err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("empty", ["qrels/train.tsv", "corpus.jsonl", "queries.jsonl"])
def test_prepare_refuses_an_empty_input_file(tmp_path, beir, capsys, empty):
    (beir / empty).write_text("query-id\tcorpus-id\tscore\n" if empty.startswith("qrels") else "")
    err = _one_line(capsys, *_prepare(beir, tmp_path / "shards", "--keep-without-negatives"))
    kind = {"qrels/train.tsv": "judgements", "corpus.jsonl": "passages", "queries.jsonl": "queries"}[empty]
    assert f"lead-dist prepare: error: {beir / empty}: no {kind} (an empty file?)" in err, err


# ---------------------------------------------------------------------------------------------------------------
# prepare: one writer per --out, and what a killed one leaves


def test_a_second_prepare_into_the_same_out_meets_the_lock(tmp_path, beir, capsys):
    from lead_dist.lockfile import acquire

    out = tmp_path / "shards"
    holder = acquire(tmp_path, "lead-dist prepare (another one)", name=f"{LOCK_NAME}.prepare-{out.name}")
    try:
        err = _one_line(capsys, *_prepare(beir, out, "--overwrite"))
    finally:
        holder.release()
    assert f"--out {out}: another prepare writes it: " in err and "lead-dist prepare (another one)" in err, err
    assert not out.exists()
    assert cli_main(_prepare(beir, out, "--overwrite")) == 0  # once the first is done, the next one runs


def test_a_killed_prepares_leftovers_are_removed_by_the_next_one(tmp_path, beir, capsys):
    out = tmp_path / "shards"
    assert cli_main(_prepare(beir, out)) == 0
    leftovers = [tmp_path / ".shards.prepare-new-1a2b3c4d", tmp_path / ".shards.prepare-k9x_tmp",
                 tmp_path / ".shards.prepare-old-5e6f7a8b"]  # fmt: skip
    for folder in leftovers:
        folder.mkdir()
        (folder / "join.sqlite").write_bytes(b"\0" * 64)
    # the lock of the killed prepare (a pid that no longer runs) is taken over, as train's is
    lock = tmp_path / f"{LOCK_NAME}.prepare-shards"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 7, "purpose": "lead-dist prepare"}))
    assert cli_main(_prepare(beir, out, "--overwrite")) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "shards"]


# ---------------------------------------------------------------------------------------------------------------
# --debug, connections


@pytest.mark.parametrize(
    "argv",
    [["train", str(TINY), "train.max_stepz=3"], ["prepare", "--format", "beir", "--input", "/nonexistent/x", "--out"],
     ["split", "--data", "/nonexistent/x", "--out"]],
    ids=["config-key", "prepare-input", "split-input"],
)  # fmt: skip
def test_debug_adds_the_traceback_to_every_refusal(tmp_path, capsys, argv):
    argv = [*argv, str(tmp_path / "o")] if argv[-1] == "--out" else argv
    assert cli_main(argv) == 2
    plain = capsys.readouterr().err.strip()
    assert len(plain.splitlines()) == 1 and "Traceback" not in plain, plain
    assert cli_main([*argv, "--debug"]) == 2
    debug = capsys.readouterr().err.strip()
    assert debug.startswith("Traceback (most recent call last):") and debug.splitlines()[-1] == plain, debug


def test_a_refused_connection_is_one_line_with_the_url(tmp_path):
    from lead_dist.data.errors import ShardError
    from lead_dist.data.location import parse_location
    from lead_dist.data.remote import read_manifest_at

    with socket.socket() as probe:  # a port nobody listens on: bound, then closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/scifact"
    with pytest.raises(ShardError) as caught:
        read_manifest_at(parse_location(url), retries=0, backoff_s=0.0)
    message = str(caught.value)
    assert message == (
        f"{url}/manifest.json: cannot be read: the connection was refused (no server listening there, or the host "
        "is unreachable) (curl exit status 7)"
    ), message
