"""The output_dir verdict reaches every rank (train/output_dir.py): under a real 2-process gloo launch, a used
folder is refused on both ranks with the main process's message, and a free folder is locked by rank 0 only."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.multiprocess

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch.distributed as dist
    from lead_dist.errors import UsageError
    from lead_dist.train.output_dir import claim_output_dir

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    report = open(f"{sys.argv[1]}.rank{rank}", "w")  # one file per rank: two ranks' stdout lines can interleave
    for folder in sys.argv[2:]:
        try:
            lock = claim_output_dir(folder, resume=None, overwrite=False, is_main=rank == 0)
            print(f"rank {rank} of {world}: {folder}: claimed lock={lock is not None}", file=report, flush=True)
        except UsageError as error:
            print(f"rank {rank} of {world}: {folder}: refused: {error}", file=report, flush=True)
    report.close()
    dist.destroy_process_group()
    """
)


def test_every_rank_gets_the_main_process_verdict(tmp_path):
    used, free = tmp_path / "used", tmp_path / "free"
    used.mkdir()
    (used / "log.jsonl").write_text("{}\n")
    script = tmp_path / "claim.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(29500 + random.Random().randint(0, 3000)), str(script), str(tmp_path / "report"), str(used), str(free)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [(tmp_path / f"report.rank{rank}").read_text() for rank in (0, 1)]
    lines = sorted(line for text in reports for line in text.splitlines() if line.startswith("rank "))
    refusal = f"refused: output_dir {used} is not empty (log.jsonl): continue that run with --resume latest"
    assert [line.split(": ", 1)[0] for line in lines] == ["rank 0 of 2", "rank 0 of 2", "rank 1 of 2", "rank 1 of 2"]
    assert sum(refusal in line for line in lines) == 2, lines  # both ranks, the same message
    assert f"rank 0 of 2: {free}: claimed lock=True" in lines and f"rank 1 of 2: {free}: claimed lock=False" in lines
    assert not (used / ".lead_dist.lock").exists() and not (free / ".lead_dist.lock").exists()  # released at exit
