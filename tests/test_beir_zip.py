"""A BEIR zip as `prepare --input` / `split --data` (issue 21, newcomer item): by path or http(s) URL (served from
127.0.0.1 here, through webdataset's curl opener), checked against --sha256, unpacked once into the cache and
reused only while its content is what was unpacked."""

from __future__ import annotations

import hashlib
import json
import socket
import zipfile
from pathlib import Path

import pytest
from test_data_fixtures import ShardServer, write_beir

from lead_dist.cli import main as cli_main


def _zip_of(folder: Path, archive: Path, top: str = "tinyset") -> str:
    """Zip `folder` as BEIR does (one top-level folder); returns the zip's sha256."""
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, f"{top}/{path.relative_to(folder)}")
    return hashlib.sha256(archive.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LEAD_DIST_CACHE", str(tmp_path / "cache"))
    write_beir(tmp_path / "beir", num_queries=8, num_passages=10)
    (tmp_path / "beir" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tp3\t1\n")
    (tmp_path / "site").mkdir()
    sha = _zip_of(tmp_path / "beir", tmp_path / "site" / "tinyset.zip")
    with ShardServer(tmp_path / "site") as server:
        yield tmp_path, f"{server.url}/tinyset.zip", sha, server


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def _prepare(source: str | Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "--format", "beir", "--input", str(source), "--out", str(out), "--shards", "2", *extra]


def test_a_served_zip_prepares_the_same_shards_as_its_folder_and_is_cached(served, capsys):
    root, url, sha, server = served
    assert cli_main(_prepare(root / "beir", root / "from-folder")) == 0
    assert cli_main(_prepare(url, root / "from-url", "--sha256", sha)) == 0, capsys.readouterr().err
    assert _shards(root / "from-url") == _shards(root / "from-folder") and len(_shards(root / "from-url")) == 3
    unpacked = root / "cache" / "beir" / sha
    record = json.loads((unpacked / "unpacked.json").read_text())
    assert record["sha256"] == sha and record["source"] == url
    assert (unpacked / "files" / "tinyset" / "corpus.jsonl").read_bytes() == (
        root / "beir" / "corpus.jsonl"
    ).read_bytes()
    manifest = json.loads((root / "from-url" / "manifest.json").read_text())
    assert manifest["options"]["input"] == url
    assert manifest["sources"][0]["path"] == str(unpacked / "files" / "tinyset" / "corpus.jsonl")
    assert server.requests == ["tinyset.zip"]
    capsys.readouterr()

    # with --sha256 the verified cache is used without a download
    assert cli_main(_prepare(url, root / "again", "--sha256", sha)) == 0
    assert server.requests == ["tinyset.zip"] and "using the unpacked copy" in capsys.readouterr().err
    # without it the zip is fetched again (its content may have changed) and the cache reused when it matches
    assert cli_main(_prepare(url, root / "again", "--overwrite")) == 0
    assert server.requests == ["tinyset.zip"] * 2
    assert f"sha256 {sha}" in capsys.readouterr().err


def test_a_wrong_checksum_is_refused_and_a_damaged_cache_is_unpacked_again(served, capsys):
    root, url, sha, server = served
    wrong = "0" * 64
    code = cli_main(_prepare(url, root / "out", "--sha256", wrong))
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"lead-dist prepare: error: {url}: sha256 is {sha}, but --sha256 says {wrong}: not the zip expected"
    assert code == 2 and err[-1] == expected, err
    assert not (root / "out").exists() and sorted(p.name for p in (root / "cache" / "beir").iterdir()) == []

    assert cli_main(_prepare(url, root / "out", "--sha256", sha)) == 0
    corpus = root / "cache" / "beir" / sha / "files" / "tinyset" / "corpus.jsonl"
    good = corpus.read_bytes()
    corpus.write_bytes(good.replace(b"passage 3", b"passage X"))  # same size, other content
    assert cli_main(_prepare(url, root / "out2", "--sha256", sha)) == 0
    assert corpus.read_bytes() == good and server.requests == ["tinyset.zip"] * 3  # refused, first, repair
    assert _shards(root / "out2") == _shards(root / "out")


def test_split_takes_a_local_zip_and_links_into_the_cache(served, capsys):
    root, _url, sha, _server = served
    zip_path = root / "site" / "tinyset.zip"
    argv = ["split", "--data", str(zip_path), "--sha256", sha, "--dev-fraction", "0.25", "--out", str(root / "split")]
    assert cli_main(argv) == 0, capsys.readouterr().err
    link = root / "split" / "corpus.jsonl"
    assert link.is_symlink() and link.resolve() == root / "cache" / "beir" / sha / "files" / "tinyset" / "corpus.jsonl"
    assert (root / "split" / "qrels" / "test.tsv").read_text() == (root / "beir" / "qrels" / "test.tsv").read_text()


def test_unsafe_members_and_unreachable_urls_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEAD_DIST_CACHE", str(tmp_path / "cache"))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../outside.txt", "escape")
    code = cli_main(_prepare(evil, tmp_path / "out"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].endswith("member '../outside.txt' would be written outside the folder"), err
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "cache" / "outside.txt").exists()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/scifact.zip"
    assert cli_main(_prepare(url, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"lead-dist prepare: data error: {url}: cannot be downloaded: the connection was refused (no server "
        "listening there, or the host is unreachable) (curl exit status 7)"
    ), err
