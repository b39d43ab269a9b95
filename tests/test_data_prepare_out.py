"""`prepare --out` (issue 15, section 2 item 4), through the CLI: never over an input; a used --out needs
--overwrite and is then replaced whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lead_dist.cli import main as cli_main

SCIFACT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"


def _small_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": f"t{i}", "text": f"passage number {i}"} for i in range(6)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"q {i}"}) + "\n" for i in range(3))
    )
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3))
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td5\t1\n")
    return folder


def _prepare(data: Path, out: Path, *extra: str) -> int:
    return cli_main(["prepare", "--format", "beir", "--input", str(data), "--out", str(out), "--keep-without-negatives",
                     *extra])  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["equal", "parent"])
def test_an_out_equal_to_or_containing_the_input_is_refused(tmp_path, capsys, where):
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} not present")  # the shared SciFact copy of this machine
    data = tmp_path / "scifact"
    shutil.copytree(SCIFACT, data)
    before = _files(data)
    out = data if where == "equal" else tmp_path
    assert _prepare(data, out, "--overwrite") == 2
    err = capsys.readouterr().err
    relation = "is" if where == "equal" else "contains"
    assert f"lead-dist prepare: error: --out {out} {relation} --input {data}" in err, err
    assert _files(data) == before, "the input was changed"


def test_a_used_out_needs_overwrite_and_is_replaced_whole(tmp_path, capsys):
    data = _small_beir(tmp_path / "beir")
    out = tmp_path / "shards"
    assert _prepare(data, out, "--shards", "3") == 0
    first = _files(out)
    assert "train-000002.tar" in first

    assert _prepare(data, out, "--shards", "1") == 2
    assert "is not empty" in capsys.readouterr().err and _files(out) == first

    (out / "mine.txt").write_text("a file of the user's inside the old output")
    assert _prepare(data, out, "--shards", "1", "--overwrite") == 0
    second = _files(out)
    # replaced whole: no shard of the 3-shard run and no foreign file survive; nothing staged is left beside it
    assert sorted(n for n in second if n.startswith("train-")) == ["train-000000.tar"]
    assert "mine.txt" not in second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beir", "shards"]
    manifest = json.loads(second["manifest.json"])
    assert manifest["options"]["out"] == str(out) and len(manifest["shards"]["train"]) == 1


def test_a_failed_prepare_leaves_the_old_out_as_it_was(tmp_path, capsys):
    data = _small_beir(tmp_path / "beir")
    out = tmp_path / "shards"
    assert _prepare(data, out) == 0
    first = _files(out)
    (data / "corpus.jsonl").write_text("{not json\n")
    assert _prepare(data, out, "--overwrite") == 2
    assert "corpus.jsonl:1" in capsys.readouterr().err
    assert _files(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beir", "shards"]
