"""A two-node launch on one machine: two `accelerate launch` commands (--num_machines 2, machine ranks 0 and 1, the
main process on 127.0.0.1), one process each, train together and match 1 node x 2 processes step for step."""

from __future__ import annotations

import subprocess

import pytest
import test_train_loop_helpers as helpers
import torch

pytestmark = pytest.mark.multiprocess


def _node_command(config, machine_rank: int, port: int) -> list[str]:
    return [
        str(helpers.BIN / "accelerate"), "launch", "--multi_gpu",
        "--num_machines", "2", "--machine_rank", str(machine_rank), "--num_processes", "2",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
        "-m", "lead_dist.cli", "train", str(config),
    ]  # fmt: skip


def test_two_nodes_match_one_node_two_processes(tmp_path, tmp_path_factory):
    reference = helpers.ddp_reference_run(tmp_path_factory)
    out = tmp_path / "run"
    config = helpers.write_config(
        tmp_path / "two_nodes.yaml", helpers.reference_config(helpers.shared_shards(tmp_path_factory), out)
    )
    port = helpers.free_port()
    nodes = [
        subprocess.Popen(
            _node_command(config, rank, port),
            env=helpers.launch_env("accelerate"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=helpers.REPO,
        )
        for rank in (0, 1)
    ]
    outputs = []
    for node in nodes:
        try:
            outputs.append(node.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for other in nodes:
                other.kill()
            raise
    for rank, (node, output) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, f"node {rank} failed:\n{output[-6000:]}"

    info, reference_info = helpers.run_info(out), helpers.run_info(reference)
    assert (info["world_size"], info["num_machines"], info["local_world_size"]) == (2, 2, 1)
    assert (reference_info["world_size"], reference_info["num_machines"], reference_info["local_world_size"]) == (
        2,
        1,
        2,
    )
    assert all(record["world_size"] == 2 for record in helpers.step_records(out))
    assert helpers.losses(out) == pytest.approx(helpers.losses(reference), abs=1e-5)
    expected, got = helpers.exported_weights(reference), helpers.exported_weights(out)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=0, msg=name)
