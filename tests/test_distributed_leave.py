"""A verb that joined a process group ends it before the process exits; a group the caller made is left alone.

Without that, a gloo group is torn down by the interpreter's exit with its worker threads still joinable, and a rank
that succeeded dies of SIGABRT ("terminate called without an active exception"). CI saw it once in a two-rank
rerank; a join-gather-exit launch died so in 10 of 20 tries on the 2-core build machine. The check that cannot pass
by luck is the group's state after `cli.main` returns; the exit codes of repeated launches are the symptom itself.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess

# A verb registered only in the launched script: join the group the launcher describes, gather every rank's number.
PROBE_VERB = """
from lead_dist.distributed import all_gather_objects, init_from_env

SEEN = {}


def add_arguments(parser):
    pass


def run(args):
    rank, world = init_from_env()
    SEEN.update(rank=rank, world=world, gathered=all_gather_objects(rank))
    return 0
"""

# Each rank runs the verb through cli.main, records what it saw and whether a group is still open, and exits.
LAUNCHED = """
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch.distributed as dist
from lead_dist import cli
import probe_verb

mode, out = sys.argv[1], sys.argv[2]
if mode == "caller-joins":
    dist.init_process_group("gloo")
cli.VERBS["gather-probe"] = ("probe_verb", "join, gather, succeed")
code = cli.main(["gather-probe"])
record = dict(probe_verb.SEEN, code=code, open_after=dist.is_initialized())
with open(os.path.join(out, f"rank{probe_verb.SEEN['rank']}.json"), "w") as handle:
    json.dump(record, handle)
if dist.is_initialized():
    dist.destroy_process_group()
"""


def _launch(folder: Path, mode: str, out: Path) -> subprocess.CompletedProcess:
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(29500 + random.Random().randint(0, 2000)), str(folder / "launched.py"), mode, str(out)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    (tmp_path / "probe_verb.py").write_text(PROBE_VERB)
    (tmp_path / "launched.py").write_text(LAUNCHED)
    return tmp_path


def _records(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_a_verb_that_joined_the_group_ends_it_and_both_ranks_exit_cleanly(scripts: Path) -> None:
    for attempt in range(3):  # the race lost about half the launches before the fix
        done = _launch(scripts, "verb-joins", scripts / f"out{attempt}")
        assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-3000:]
        records = _records(scripts / f"out{attempt}")
        assert [r["world"] for r in records] == [2, 2] and [r["gathered"] for r in records] == [[0, 1], [0, 1]]
        assert [r["code"] for r in records] == [0, 0]
        assert [r["open_after"] for r in records] == [False, False]  # the verb ended the group it made


def test_a_group_the_caller_made_survives_the_verb(scripts: Path) -> None:
    done = _launch(scripts, "caller-joins", scripts / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    records = _records(scripts / "out")
    assert [r["world"] for r in records] == [2, 2] and [r["gathered"] for r in records] == [[0, 1], [0, 1]]
    assert [r["open_after"] for r in records] == [True, True]  # the caller's group is the caller's to end
