"""A real 2-process launch (gloo): each rank streams with 2 DataLoader workers; together they see every training
example exactly once per epoch, run the same number of collectives, and resume exactly from a saved cursor."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from test_data_fixtures import run_prepare, write_beir

WORLD_SIZE = 2
NUM_QUERIES = 64  # 8 shards of 8: 2 ranks x 2 workers x 2 shards, 16 examples per worker part


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, folder: str, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from lead_dist.data.stream import TrainStream

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    world = dist.get_world_size()

    def make(epoch: int) -> TrainStream:
        stream = TrainStream(
            folder, batch_size=4, num_negatives=2, seed=11, rank=dist.get_rank(), world_size=world, num_workers=2
        )
        stream.set_epoch(epoch)
        return stream

    result: dict = {"world_size": world, "epochs": {}, "resume_ok": {}}
    for epoch in (0, 1):
        batches = []
        for batch in make(epoch):
            # A collective per batch: a rank that ran dry early would leave the other blocked here.
            dist.all_reduce(torch.ones(1))
            batches.append([example["qid"] for example in batch])
        result["epochs"][epoch] = batches
    # Stop after k batches, keep the cursor, resume in a fresh stream: the remaining sequence must match.
    for stop in (1, 3, 6):
        first = make(1)
        iterator = iter(first)
        for _ in range(stop):
            next(iterator)
        state = first.state_dict()
        del iterator
        resumed = make(1)
        resumed.load_state_dict(state)
        rest = [[example["qid"] for example in batch] for batch in resumed]
        result["resume_ok"][stop] = rest == result["epochs"][1][stop:]
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.multiprocess
def test_two_processes_two_workers_each_see_every_example_once(tmp_path: Path) -> None:
    write_beir(tmp_path / "src", num_queries=NUM_QUERIES, num_passages=NUM_QUERIES)
    run_prepare("--format", "beir", "--input", tmp_path / "src", "--out", tmp_path / "out", "--shards", "8")
    mp.spawn(_rank_main, args=(str(tmp_path / "out"), _free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    assert [r["world_size"] for r in results] == [WORLD_SIZE, WORLD_SIZE]
    for epoch in ("0", "1"):
        counts = [len(r["epochs"][epoch]) for r in results]
        assert counts == [8, 8]  # 32 examples per rank in batches of 4, equal on both ranks
        seen = [qid for r in results for batch in r["epochs"][epoch] for qid in batch]
        assert sorted(seen) == sorted(f"q{i}" for i in range(NUM_QUERIES))
    orders = [[qid for batch in results[0]["epochs"][e] for qid in batch] for e in ("0", "1")]
    assert orders[0] != orders[1]  # a new epoch reshuffles
    assert all(ok for r in results for ok in r["resume_ok"].values())
    assert all(len(r["resume_ok"]) == 3 for r in results)
