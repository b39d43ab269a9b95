"""Inputs are sacred (issue 21, BAD item 1): no verb writes to, or deletes, a path that is, contains or lies inside
one of its inputs, links resolved; `--overwrite` deletes only a folder that the same kind of verb wrote.

Each case runs the real command line and checks the refusal (exit code 2, one line naming both flags) and that no
byte of the input changed. Every case here destroyed or changed the input before `lead_dist.guard`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_data_fixtures import write_beir

from lead_dist.cli import main as cli_main
from lead_dist.guard import MARKER, marker_kind

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, *argv: object) -> str:
    """The refusal: exit code 2 and one line, printed before any model is loaded (nothing else on stderr)."""
    code = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write_beir(folder, num_queries=6, num_passages=8)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tp3\t1\nq1\tp4\t1\n")
    return folder


@pytest.fixture
def shards(tmp_path: Path, beir: Path) -> Path:
    out = tmp_path / "work" / "shards"
    assert cli_main(["prepare", "--format", "beir", "--input", str(beir), "--out", str(out), "--shards", "2"]) == 0
    return out


@pytest.mark.parametrize("where", ["the shards", "their parent"])
def test_train_output_dir_over_its_training_shards_is_refused(tmp_path, shards, capsys, where):
    before = _files(tmp_path / "work")
    output_dir = shards if where == "the shards" else shards.parent
    relation = "is" if where == "the shards" else "contains"
    err = _refused(capsys, "train", TINY, f"data.train={shards}", f"output_dir={output_dir}", "--overwrite")
    assert f"output_dir {output_dir} {relation} data.train {shards}" in err, err
    assert _files(tmp_path / "work") == before


def test_train_output_dir_containing_its_config_file_is_refused(tmp_path, shards, capsys):
    run = tmp_path / "run"
    run.mkdir()
    config = run / "my.yaml"
    config.write_text(TINY.read_text())
    err = _refused(capsys, "train", config, f"data.train={shards}", f"output_dir={run}", "--overwrite")
    assert f"output_dir {run} contains the config file {config}" in err, err
    assert config.read_text() == TINY.read_text()


@pytest.mark.parametrize("target", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "results.json"])
@pytest.mark.parametrize("flag", ["--out", "--run-out", "--embeddings"])
def test_evaluate_never_writes_into_its_data(tmp_path, beir, tiny_bert_dir, capsys, flag, target):
    before = _files(beir)
    outputs = {"--out": tmp_path / "r.json", "--run-out": tmp_path / "r.trec", "--embeddings": tmp_path / "emb"}
    outputs[flag] = beir / target
    argv = ["evaluate", "--model", tiny_bert_dir, "--data", beir, "--top-k", "3", "--quiet", "--overwrite"]
    err = _refused(capsys, *argv, *[x for pair in outputs.items() for x in pair])
    assert f"{flag} {beir / target} lies inside --data {beir}" in err, err
    assert _files(beir) == before
    assert not (beir / "results.embeddings").exists() and not (tmp_path / "r.embeddings").exists()


def test_evaluate_out_and_run_out_must_differ(tmp_path, beir, tiny_bert_dir, capsys):
    same = tmp_path / "results"
    err = _refused(capsys, "evaluate", "--model", tiny_bert_dir, "--data", beir, "--out", same, "--run-out", same)
    assert f"--out {same} is --run-out {same}" in err, err


def test_prepare_out_inside_its_input_is_refused(tmp_path, beir, capsys):
    before = _files(beir)
    err = _refused(capsys, "prepare", "--format", "beir", "--input", beir, "--out", beir / "qrels", "--overwrite")
    assert f"--out {beir / 'qrels'} lies inside --input {beir}" in err, err
    assert _files(beir) == before


def test_prepare_over_the_folder_a_split_links_to_is_refused(tmp_path, beir, capsys):
    split = tmp_path / "split"
    assert cli_main(["split", "--data", str(beir), "--dev-fraction", "0.5", "--out", str(split)]) == 0
    assert (split / "corpus.jsonl").is_symlink()
    before = _files(beir)
    err = _refused(capsys, "prepare", "--format", "beir", "--input", split, "--out", beir, "--overwrite")
    assert f"--out {beir} contains --input {split} (through the link {split / 'corpus.jsonl'} ->" in err, err
    assert _files(beir) == before


def test_split_out_inside_its_data_is_refused(beir, capsys):
    before = _files(beir)
    err = _refused(capsys, "split", "--data", beir, "--dev-fraction", "0.5", "--out", beir / "split")
    assert f"--out {beir / 'split'} lies inside --data {beir}" in err, err
    assert _files(beir) == before


def _fake_training_run(folder: Path, *, marked: bool) -> Path:
    """The layout `lead-dist train` leaves (log, run record, a checkpoint, the export), marked as train writes it."""
    (folder / "checkpoint-00000002").mkdir(parents=True)
    (folder / "checkpoint-00000002" / "COMPLETE").write_text("{}")
    (folder / "export" / "student").mkdir(parents=True)
    (folder / "export" / "student" / "config.json").write_text('{"model_type": "bert"}')
    (folder / "log.jsonl").write_text('{"step": 1}\n')
    (folder / "run.json").write_text("{}")
    if marked:
        (folder / MARKER).write_text(json.dumps({"kind": "train"}))
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("marked", [True, False])
def test_encode_into_a_training_run_is_refused(tmp_path, beir, tiny_bert_dir, capsys, overwrite, marked):
    run = _fake_training_run(tmp_path / "run", marked=marked)
    before = _files(run)
    argv = ["encode", "--model", tiny_bert_dir, "--corpus", beir, "--out", run, "--quiet"]
    err = _refused(capsys, *argv, *(["--overwrite"] if overwrite else []))
    whose = "written by lead-dist train" if marked else "has no" if overwrite else "without a"
    assert f"--out {run}" in err and whose in err, err
    assert _files(run) == before


def test_encode_overwrite_of_a_prepared_folder_is_refused(tmp_path, shards, tiny_bert_dir, capsys):
    before = _files(shards)
    argv = ["encode", "--model", tiny_bert_dir, "--corpus", shards, "--out", shards, "--quiet", "--overwrite"]
    err = _refused(capsys, *argv)
    assert f"--out {shards} is --corpus {shards}" in err, err
    other = tmp_path / "emb"
    argv = ["encode", "--model", tiny_bert_dir, "--corpus", tmp_path / "data", "--out", shards, "--overwrite"]
    err = _refused(capsys, *argv)  # not the corpus read this time: the marker says whose it is
    assert "written by lead-dist prepare or mine" in err, err
    assert _files(shards) == before
    assert not other.exists()


def test_encode_marks_its_folder_and_overwrite_replaces_it(tmp_path, beir, tiny_bert_dir, capsys):
    emb = tmp_path / "emb"
    argv = ["encode", "--model", str(tiny_bert_dir), "--corpus", str(beir), "--out", str(emb), "--quiet"]
    assert cli_main(argv) == 0
    assert marker_kind(emb) == "embeddings"
    assert cli_main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert marker_kind(emb) == "embeddings" and (emb / "shard-00000.done.json").is_file()


def test_overwrite_never_deletes_a_foreign_folder(tmp_path, beir, shards, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    err = _refused(capsys, "prepare", "--format", "beir", "--input", beir, "--out", mine, "--overwrite")
    assert f"--out {mine}: --overwrite deletes only a folder written by lead-dist prepare" in err, err
    err = _refused(capsys, "train", TINY, f"data.train={shards}", f"output_dir={mine}", "--overwrite")
    assert f"output_dir {mine}: --overwrite deletes only a folder written by lead-dist train" in err, err
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_a_prepared_folder_is_marked_and_replaced_by_the_next_overwrite(tmp_path, beir, shards, capsys):
    assert marker_kind(shards) == "prepare"
    again = ["prepare", "--format", "beir", "--input", str(beir), "--out", str(shards), "--shards", "1", "--overwrite"]
    assert cli_main(again) == 0, capsys.readouterr().err
    assert marker_kind(shards) == "prepare" and not (shards / "train-000001.tar").exists()


def test_train_marks_the_output_dir_it_claims(tmp_path):
    from lead_dist.train.output_dir import claim_output_dir

    out = tmp_path / "run"
    lock = claim_output_dir(out, resume=None, overwrite=False, is_main=True)
    assert lock is not None
    lock.release()
    assert marker_kind(out) == "train"


def test_cache_teacher_out_inside_its_training_shards_is_refused(tmp_path, shards, capsys):
    before = _files(shards)
    recipe = REPO / "configs" / "scifact" / "bench" / "lead_de_frozen.yaml"
    err = _refused(capsys, "cache-teacher", recipe, f"data.train={shards}", "--out", shards / "cache")
    assert f"--out {shards / 'cache'} lies inside data.train {shards}" in err, err
    assert _files(shards) == before


def test_prepare_demo_never_writes_its_dataset_over_a_user_folder(tmp_path, beir, capsys):
    before = _files(beir)
    err = _refused(capsys, "prepare", "--format", "demo", "--input", beir, "--out", tmp_path / "demo")
    assert f"--input {beir} is a folder without a {MARKER} marker" in err, err
    assert _files(beir) == before


@pytest.mark.parametrize("verb", ["search", "rerank", "mine"])
def test_run_writers_never_write_over_their_inputs(tmp_path, beir, tiny_bert_dir, capsys, verb):
    run = tmp_path / "first.trec"
    run.write_text("q0 Q0 p3 1 2.0 x\nq1 Q0 p4 1 1.0 x\n")
    before, run_before = _files(beir), run.read_bytes()
    if verb == "search":
        emb = tmp_path / "emb"
        encode = ["encode", "--model", str(tiny_bert_dir), "--corpus", str(beir), "--out", str(emb), "--quiet"]
        assert cli_main(encode) == 0
        capsys.readouterr()  # what loading the model printed: the refusal below is checked alone
        argv = ["search", "--model", tiny_bert_dir, "--index", emb, "--queries", beir / "queries.jsonl",
                "--out", beir / "queries.jsonl"]  # fmt: skip
        expected = f"--out {beir / 'queries.jsonl'} is --queries {beir / 'queries.jsonl'}"
    elif verb == "rerank":
        argv = ["rerank", "--model", tiny_bert_dir, "--data", beir, "--first-stage", run, "--kind", "de",
                "--out", tmp_path / "r.json", "--run-out", run]  # fmt: skip
        expected = f"--run-out {run} is --first-stage {run}"
    else:
        argv = ["mine", "--run", run, "--input", beir, "--split", "test", "--out", tmp_path, "--overwrite"]
        expected = f"--out {tmp_path} contains --run {run}"
    err = _refused(capsys, *argv)
    assert expected in err, err
    assert _files(beir) == before and run.read_bytes() == run_before


def test_demo_out_apart_from_its_config_and_never_a_foreign_folder(tmp_path, capsys):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "demo.yaml").write_text((REPO / "configs" / "demo.yaml").read_text())
    err = _refused(capsys, "demo", "--config", config_dir / "demo.yaml", "--out", config_dir)
    assert f"--out {config_dir} contains --config {config_dir / 'demo.yaml'}" in err, err
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "eval-teacher.json").write_text("my own results")
    err = _refused(capsys, "demo", "--config", config_dir / "demo.yaml", "--out", foreign)
    assert f"--out {foreign} is a folder without a {MARKER} marker" in err, err
    assert (foreign / "eval-teacher.json").read_text() == "my own results"
