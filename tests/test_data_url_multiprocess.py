"""Training shards from a real HTTP server on 127.0.0.1 (`http.server` in a thread of this test process) under
real 2-process launches, the world size asserted in each:

- two gloo ranks x two DataLoader workers stream the same batches from the URL, from a `pipe:cat` command and from
  the local folder, and a server that cuts shards halfway gives them too (every example counted once per epoch);
- `lead-dist train` under `accelerate launch` from the URL, killed with kill -9 and resumed with `--resume latest`,
  ends with the weights and losses of an uninterrupted run on the local folder;
- a 404 fails before training starts, on both ranks, naming the URL.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import test_train_loop_helpers as helpers
import torch
import torch.multiprocessing as mp
from test_data_fixtures import ShardServer, run_prepare, write_beir

from lead_dist.train import checkpoint

pytestmark = pytest.mark.multiprocess

WORLD_SIZE = 2
NUM_QUERIES = 64  # 8 shards of 8: 2 ranks x 2 workers x 2 shards
CUT = ("train-000002.tar", "train-000005.tar")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, sources: dict[str, str], port: int, out: str) -> None:
    import torch.distributed as dist

    from lead_dist.data.stream import TrainStream

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    world = dist.get_world_size()
    result: dict = {"world_size": world, "epochs": {}}
    for label, source in sources.items():
        stream = TrainStream(
            source, batch_size=4, num_negatives=2, seed=11, rank=dist.get_rank(), world_size=world, num_workers=2,
            retries=3, retry_backoff_s=0.05,
        )  # fmt: skip
        epochs = []
        for epoch in (0, 1):
            stream.set_epoch(epoch)
            batches = []
            for batch in stream:
                dist.all_reduce(torch.ones(1))  # a rank that ran dry would leave the other blocked here
                batches.append([[e["qid"], e["query"], e["pos_id"], e["neg_ids"], e["neg_texts"]] for e in batch])
            epochs.append(batches)
        result["epochs"][label] = epochs
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _prepared(root: Path) -> Path:
    write_beir(root / "src", num_queries=NUM_QUERIES, num_passages=NUM_QUERIES)
    lines = [f"q{i} Q0 p{(i + 3 * k) % NUM_QUERIES} {k} {10 - k} run" for i in range(NUM_QUERIES) for k in range(1, 6)]
    (root / "run.trec").write_text("\n".join(lines) + "\n")
    run_prepare(
        "--format", "beir", "--input", root / "src", "--out", root / "out", "--shards", "8", "--no-corpus",
        "--negatives-run", root / "run.trec",
    )  # fmt: skip
    return root / "out"


@pytest.mark.slow
def test_two_ranks_stream_the_same_batches_from_url_pipe_and_a_cutting_server(tmp_path: Path) -> None:
    folder = _prepared(tmp_path)
    with ShardServer(folder) as server, ShardServer(folder, cut={name: 2 for name in CUT}) as cutting:
        sources = {
            "local": str(folder),
            "http": server.url,
            "pipe": f"pipe:cat {folder}/{{name}}",
            "cut": cutting.url,
        }
        mp.spawn(_rank_main, args=(sources, _free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
        cut_requests = {name: cutting.requests.count(name) for name in CUT}
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    assert [r["world_size"] for r in results] == [WORLD_SIZE, WORLD_SIZE]
    for rank in results:
        for label in ("http", "pipe", "cut"):
            assert rank["epochs"][label] == rank["epochs"]["local"], label
    for epoch in (0, 1):
        qids = [example[0] for r in results for batch in r["epochs"]["cut"][epoch] for example in batch]
        assert sorted(qids) == sorted(f"q{i}" for i in range(NUM_QUERIES))  # each example exactly once
        assert all(len(r["epochs"]["cut"][epoch]) == 8 for r in results)  # 32 examples per rank, batches of 4
    # Each cut shard: probed by one rank (which the first cut does not disturb), cut once more in epoch 0 and
    # read again whole, then read whole in epoch 1.
    assert cut_requests == {name: 4 for name in CUT}


def _config(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, train: str) -> dict:
    config = helpers.tiny_config(
        helpers.shared_shards(tmp_path_factory), output_dir, helpers.minilm_tokenizer(),
        train={"max_steps": 6, "save_every": 2, "keep_last": 2},
    )  # fmt: skip
    config["data"]["train"] = train
    return config


def _last_logged_step(output_dir: Path) -> int:
    if not (output_dir / "log.jsonl").is_file():
        return 0
    return max((r["step"] for r in helpers.step_records(output_dir)), default=0)


@pytest.mark.slow
def test_kill_and_resume_from_a_url_ends_as_an_uninterrupted_local_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    local = helpers.shared_shards(tmp_path_factory)
    reference = tmp_path / "local"
    helpers.launch(
        "accelerate", helpers.write_config(tmp_path / "local.yaml", _config(tmp_path_factory, reference, str(local)))
    )
    out = tmp_path / "url"
    with ShardServer(local) as server:
        config = helpers.write_config(tmp_path / "url.yaml", _config(tmp_path_factory, out, server.url))
        process = helpers.start("accelerate", config, LEAD_DIST_TEST_STEP_SLEEP="0.3")
        helpers.wait_for(lambda: _last_logged_step(out) >= 3, process, what="step 3")
        helpers.kill_tree(process)  # kill -9 of the launcher and both ranks
        assert checkpoint.latest(out).name == "step-000002"
        helpers.launch("accelerate", config, "--resume", "latest")
        assert server.requests.count("manifest.json") == 4  # both ranks, both launches: the data came over HTTP
    info = helpers.run_info(out)
    assert info["world_size"] == 2 and info["resumed_from"].endswith("step-000002")
    assert info["config"]["data"]["train"] == server.url
    for role in ("student", "teacher"):
        expected, got = helpers.exported_weights(reference, role), helpers.exported_weights(out, role)
        assert got.keys() == expected.keys()
        for name, tensor in expected.items():
            torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=f"{role} {name}")
    assert [r["step"] for r in helpers.step_records(out)] == list(range(1, 7))
    # Same batches in the same processes and kernels: the losses agree to the last bit, and to 1e-6 we ask.
    assert helpers.losses(out) == pytest.approx(helpers.losses(reference), abs=1e-6)


@pytest.mark.slow
def test_a_404_fails_before_training_on_both_ranks_naming_the_url(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with ShardServer(helpers.shared_shards(tmp_path_factory)) as server:
        missing = f"{server.url}/no-such-folder"
        config = helpers.write_config(tmp_path / "c.yaml", _config(tmp_path_factory, tmp_path / "run", missing))
        process = helpers.start("accelerate", config)
        output, _ = process.communicate(timeout=240)
    assert process.returncode != 0
    message = (
        f"lead-dist train: data error: {missing}/manifest.json: cannot be read: the server answered with an HTTP error"
    )
    assert output.count(message) == WORLD_SIZE, output[-4000:]  # one line from each of the two ranks
    assert not (tmp_path / "run" / "log.jsonl").exists()  # no step ran
    assert server.requests == ["manifest.json"] * WORLD_SIZE  # asked once per rank, never retried
