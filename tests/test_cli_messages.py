"""Messages and validation (issue 15, section 3): bad input is one line naming the key, flag or file, exit code 2,
found before any model is built; the libraries' noise is off unless --verbose; evaluate prints a short table."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from lead_dist.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"


@pytest.mark.parametrize(
    ("override", "key", "shown"),
    [("student.lr=.nan", "student.lr", "nan"), ("teacher.lr=.inf", "teacher.lr", "inf"),
     ("lead.temperature=-.inf", "lead.temperature", "-inf"), ("data.retry_backoff_s=.nan", "data.retry_backoff_s", "nan")],
)  # fmt: skip
def test_non_finite_floats_are_refused_by_key(override, key, shown, tmp_path, capsys):
    code = cli_main(["train", str(TINY), override, f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"lead-dist train: config error: {TINY}: {key}: must be a finite number, got {shown}", (
        err
    )
    assert not (tmp_path / "out").exists()


def test_bad_shard_policy_is_a_config_key():
    from lead_dist.config import ConfigError, load_config

    assert load_config(TINY, ["data.on_bad_shard=skip"]).data.on_bad_shard == "skip"
    with pytest.raises(ConfigError, match="data.on_bad_shard: 'ignore' is not one of error, skip"):
        load_config(TINY, ["data.on_bad_shard=ignore"])


def test_train_checks_its_inputs_before_building_anything(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "out"
    code = cli_main(["train", str(TINY), f"data.train={tmp_path / 'no-shards'}", f"output_dir={out}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("lead-dist train: error: data.train:") and "manifest.json" in err, err
    assert not out.exists(), "a refused run leaves no output folder behind"

    shards = tmp_path / "shards"
    assert cli_main(["prepare", "--format", "demo", "--out", str(shards)]) == 0
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("not a model")
    config = tmp_path / "warmup.yaml"
    config.write_text(f"stage: warmup\noutput_dir: {out}\ndata: {{train: {shards}}}\nmodel: {{path: {not_a_model}}}\n")
    capsys.readouterr()
    assert cli_main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    expected = f"model.path: {not_a_model} is not a lead_dist, transformers or sentence-transformers model folder"
    assert expected in err and "(no config.json)" in err and "\n" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("verb", ["evaluate", "encode", "search"])
def test_a_folder_that_is_not_a_model_is_named_with_its_flag(verb, tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(json.dumps({"_id": "d0", "title": "", "text": "x"}) + "\n")
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "x"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\n")
    index = tmp_path / "emb"
    index.mkdir()
    (index / "manifest.json").write_text(json.dumps({"fingerprint": "f", "dim": 4, "num_passages": 1,
                                                     "shard_size": 1, "num_shards": 1}))  # fmt: skip
    extra = {
        "evaluate": ["--data", str(data), "--out", str(tmp_path / "r.json")],
        "encode": ["--corpus", str(data), "--out", str(tmp_path / "e")],
        "search": ["--index", str(index), "--queries", str(data), "--out", str(tmp_path / "r.trec")],
    }[verb]
    assert cli_main([verb, "--model", str(folder), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"lead-dist {verb}: error: --model: {folder} is not a lead_dist, transformers or sentence-transformers "
        "model folder (no config.json)"
    )


def test_a_rejected_pickle_names_its_file(tmp_path):
    import torch

    from lead_dist.train.resume import load_object_state

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "student-optimizer.pt"
    torch.save({"state": Payload()}, path)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(pickle.UnpicklingError) as caught:
        load_object_state(optimizer, path)
    assert str(caught.value).startswith(f"{path}: refused to load")
    assert not (tmp_path / "ran").exists()


def test_libraries_are_quiet_unless_verbose_and_evaluate_prints_a_table(minilm_dir, tmp_path):
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"text {i}"}) + "\n"
                                               for i in range(3)))  # fmt: skip
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "text 1"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    for key in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        env.pop(key, None)

    def evaluate(*extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "lead_dist.cli", "evaluate", "--model", minilm_dir, "--data", str(data),
                   "--out", str(tmp_path / "r.json"), "--top-k", "3", "--quiet", "--overwrite", *extra]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    quiet = evaluate()
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Loading weights" not in quiet.stderr
    lines = quiet.stdout.strip().splitlines()
    assert lines[0].split() == ["metric", "value"] and lines[1].split() == ["ndcg@10", "1.0000"], quiet.stdout
    assert "{" not in quiet.stdout and f"1 queries; everything else in {tmp_path / 'r.json'}" in quiet.stdout
    verbose = evaluate("--verbose")
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr  # the check above could fail


def test_deepspeed_accelerator_notice_is_dropped_and_its_warnings_kept():
    import logging

    from lead_dist.cli import _deepspeed_notices_off

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("DeepSpeed", level, __file__, 1, message, None, None)

    assert not _deepspeed_notices_off(record(logging.WARNING, "Setting accelerator to CPU. If you have GPU ..."))
    assert not _deepspeed_notices_off(record(logging.INFO, "DeepSpeed info: version=0.18"))
    assert _deepspeed_notices_off(record(logging.WARNING, "gradient overflow, skipping step"))
    assert _deepspeed_notices_off(record(logging.ERROR, "Setting accelerator failed"))
    # Through DeepSpeed's own logger, in a fresh interpreter (the notice is printed once, when the accelerator is
    # first chosen): gone with the filter, there without it.
    script = ("import sys; from lead_dist.cli import quiet_libraries\n"
              "if sys.argv[1] == 'quiet': quiet_libraries()\n"
              "from deepspeed.accelerator import get_accelerator; get_accelerator()")  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DS_ACCELERATOR", None)
    runs = {mode: subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env,
                                 timeout=300) for mode in ("quiet", "plain")}  # fmt: skip
    assert all(run.returncode == 0 for run in runs.values()), [run.stderr[-1000:] for run in runs.values()]
    assert "Setting accelerator to CPU" in runs["plain"].stderr + runs["plain"].stdout  # the check below could fail
    assert "Setting accelerator to CPU" not in runs["quiet"].stderr + runs["quiet"].stdout


class _WriteCalls(io.RawIOBase):
    """A raw stream that keeps each write call: what reaches the file descriptor, one system call each."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.calls.append(bytes(data))
        return len(data)


def _unbuffered() -> io.TextIOWrapper:
    return io.TextIOWrapper(_WriteCalls(), encoding="utf-8", write_through=True)  # as `python -u`/PYTHONUNBUFFERED


def test_every_line_leaves_in_one_write_under_pythonunbuffered(monkeypatch, tmp_path):
    """The ranks of a launch share one stderr. Unbuffered, `print` sends a line's text and its newline in two writes,
    so another rank's line could land between them (fresh-ci saw two ranks' error lines run into one). The CLI
    line-buffers its own streams: each line is one write."""
    plain = _unbuffered()
    print("text", file=plain)
    assert plain.buffer.calls == [b"text", b"\n"]  # the race the CLI removes
    out, err = _unbuffered(), _unbuffered()
    for name, stream in (("stdout", out), ("__stdout__", out), ("stderr", err), ("__stderr__", err)):
        monkeypatch.setattr(sys, name, stream)
    assert cli_main(["split", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    print("after", file=err)
    assert err.buffer.calls[0].startswith(b"lead-dist split: error: ") and err.buffer.calls[-1] == b"after\n"
    assert all(call.endswith(b"\n") and call.count(b"\n") == 1 for call in err.buffer.calls), err.buffer.calls


def test_a_stream_put_in_place_of_the_process_own_is_left_alone(monkeypatch, tmp_path):
    """A capture a caller or test put in sys.stderr's place keeps its settings (only the process's own are changed)."""
    capture = _unbuffered()
    monkeypatch.setattr(sys, "stderr", capture)
    assert cli_main(["split", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert capture.write_through and capture.buffer.calls[1] == b"\n"
