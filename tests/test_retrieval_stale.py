"""Embeddings are tied to the corpus's content, not its path (issue 15, section 2 item 1), through the CLI.

Evaluate, change half the corpus texts in place (same path, same byte count), evaluate again with the same --out:
the reuse is refused with the reason; with --overwrite the folder is encoded again and the metrics are those a
fresh folder gives. An unchanged corpus is reused, and the reuse is said.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lead_dist.cli import main as cli_main

WORDS = "cell protein gene virus dose trial brain mouse risk blood heart lung tumor drug rate".split()


def _write_beir(folder: Path, texts: list[str]) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(texts))
    (folder / "corpus.jsonl").write_text(corpus)
    queries = {f"q{i}": f"{WORDS[i]} {WORDS[(i + 3) % len(WORDS)]}" for i in range(6)}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    qrels = "".join(f"q{i}\td{(7 * i) % len(texts)}\t1\n" for i in range(6))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


def _texts(shift: int) -> list[str]:
    return [" ".join(WORDS[(i * 5 + j + shift) % len(WORDS)] for j in range(6)) for i in range(30)]


def _evaluate(model: Path, data: Path, out: Path, *extra: str) -> int:
    return cli_main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(out), "--top-k", "10",
                     "--quiet", *extra])  # fmt: skip


def test_a_corpus_changed_in_place_is_not_served_from_old_embeddings(tiny_bert_dir, tmp_path, capsys):
    data = _write_beir(tmp_path / "beir", _texts(0))
    out = tmp_path / "results.json"
    assert _evaluate(tiny_bert_dir, data, out) == 0
    first = json.loads(out.read_text())["metrics"]

    assert _evaluate(tiny_bert_dir, data, out) == 0  # unchanged: reused, and said so
    assert "reusing 1 finished shard(s) of rank 0" in capsys.readouterr().err
    assert json.loads(out.read_text())["metrics"] == first

    # half the texts replaced by texts of the same length: same path, same size
    old = (data / "corpus.jsonl").read_bytes()
    texts = _texts(0)
    texts[::2] = _texts(7)[::2]
    _write_beir(data, texts)
    assert len((data / "corpus.jsonl").read_bytes()) == len(old) and (data / "corpus.jsonl").read_bytes() != old

    assert _evaluate(tiny_bert_dir, data, out) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lead-dist evaluate: error:")]
    assert len(lines) == 1 and "encoded from other corpus content" in lines[0] and "--overwrite" in lines[0], err
    assert json.loads(out.read_text())["metrics"] == first  # the earlier result is left alone

    assert _evaluate(tiny_bert_dir, data, out, "--overwrite") == 0
    rewritten = json.loads(out.read_text())["metrics"]
    fresh = tmp_path / "fresh.json"
    assert _evaluate(tiny_bert_dir, data, fresh) == 0
    assert rewritten == json.loads(fresh.read_text())["metrics"]
    assert rewritten != first, "the changed corpus retrieves differently (else this test shows nothing)"


def test_search_on_a_folder_that_is_not_an_embeddings_folder_is_one_line(tiny_bert_dir, tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps({"shards": {"train": [], "corpus": []}}))
    data = _write_beir(tmp_path / "beir", _texts(0))
    code = cli_main(["search", "--model", str(tiny_bert_dir), "--index", str(shards), "--queries", str(data),
                     "--out", str(tmp_path / "run.trec")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"lead-dist search: error: {shards}: not an embeddings folder written by `lead-dist encode`" in err
    assert "Traceback" not in err and "KeyError" not in err


@pytest.mark.parametrize("debug", [False, True])
def test_a_missing_data_folder_is_one_line_unless_debug(tiny_bert_dir, tmp_path, capsys, debug):
    args = ["evaluate", "--model", str(tiny_bert_dir), "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "r")]
    if debug:  # the traceback, then the same one line, and the same exit code
        assert cli_main([*args, "--debug"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("Traceback") and "FileNotFoundError" in err, err
        assert err.splitlines()[-1].startswith("lead-dist evaluate: error:") and "no qrels for split" in err
        return
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lead-dist evaluate: error:") and "no qrels for split 'test'" in err and "\n" not in err


def test_a_damaged_embeddings_shard_is_named_and_never_searched(tiny_bert_dir, tmp_path, capsys):
    """Issue 21: a flipped byte in an embeddings shard was searched silently (nDCG@10 0.048 -> 0.006). The done
    file records each shard file's sha256: search refuses the damaged file by name; evaluate encodes it again."""
    data = _write_beir(tmp_path / "beir", _texts(0))
    out = tmp_path / "results.json"
    assert _evaluate(tiny_bert_dir, data, out) == 0
    first = json.loads(out.read_text())["metrics"]
    shard = tmp_path / "results.embeddings" / "shard-00000.npy"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0x40  # an exponent bit of the second-to-last float: the file still loads, with another vector
    shard.write_bytes(bytes(raw))
    capsys.readouterr()

    code = cli_main(["search", "--model", str(tiny_bert_dir), "--index", str(shard.parent), "--queries", str(data),
                     "--out", str(tmp_path / "run.trec")])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lead-dist")]  # no progress bars
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"lead-dist search: error: {shard}: sha256 differs") and "--overwrite" in err[0], err
    assert not (tmp_path / "run.trec").exists()

    assert _evaluate(tiny_bert_dir, data, out) == 0
    err = capsys.readouterr().err
    assert f"{shard}: sha256 differs from the one recorded in shard-00000.done.json" in err, err
    assert "encoding shard-00000 again" in err
    assert json.loads(out.read_text())["metrics"] == first  # the damaged vector never reached a search
    assert shard.read_bytes() != bytes(raw)
