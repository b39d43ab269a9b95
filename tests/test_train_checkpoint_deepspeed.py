"""DeepSpeed ZeRO-3 on two real ranks (gloo): a checkpoint read back through the weights-only loader continues
training identically and refuses a tampered shard; an export gathers the partitioned weights in full."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lead_dist.models import load_model

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch, deepspeed, torch.distributed as dist
    from deepspeed.runtime.zero.partition_parameters import GatheredParameters
    from lead_dist.models import load_model
    from lead_dist.train import resume as contents
    from lead_dist.train.export import export_model, is_zero3_partitioned

    model_dir, work = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ZERO3 = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
             "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}

    def engine_for(seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2), config=ZERO3)
        return engine

    def train(engine, steps):
        for i in steps:
            torch.manual_seed(100 * i + rank)
            loss = engine(torch.randn(2, 8)).pow(2).sum()
            engine.backward(loss)
            engine.step()

    # 1. resume through the weights-only loader == uninterrupted training
    first = engine_for(0)
    train(first, range(2))
    first.save_checkpoint(f"{work}/ckpt", "pytorch_model")
    train(first, range(2, 4))
    resumed = engine_for(1)
    contents.weights_only_deepspeed_loading(resumed)
    read = []
    weights_only_load = resumed.checkpoint_engine.load
    resumed.checkpoint_engine.load = lambda path, map_location=None: (
        read.append(path), weights_only_load(path, map_location))[1]
    resumed.load_checkpoint(f"{work}/ckpt", "pytorch_model")
    train(resumed, range(2, 4))
    with GatheredParameters(list(first.module.parameters()) + list(resumed.module.parameters())):
        same = all(torch.equal(a, b) for a, b in zip(first.module.parameters(), resumed.module.parameters()))
    print(f"rank {rank}: resumed_equal={same} files_read={len(read)} optim_read={any('optim' in p for p in read)}")

    # 2. a shard whose pickle would run code is refused
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {work}/ran-code-{rank}",))

    dist.barrier()
    torch.save({"payload": Payload()}, [p for p in read if "optim" in p][0])  # each rank's own ZeRO shard
    dist.barrier()
    victim = engine_for(2)
    contents.weights_only_deepspeed_loading(victim)
    try:
        victim.load_checkpoint(f"{work}/ckpt", "pytorch_model")
        print(f"rank {rank}: tampered=loaded")
    except Exception as error:
        print(f"rank {rank}: tampered=refused {type(error).__name__}")

    # 3. export of a ZeRO-3 partitioned lead_dist model: every rank gathers, rank 0 writes
    de = load_model(model_dir, kind="de", pooling="mean", similarity="cos")
    engine, *_ = deepspeed.initialize(model=de, config=ZERO3)
    empty = engine.module.backbone.embeddings.word_embeddings.weight.numel() == 0
    export_model(engine, f"{work}/export", is_main=rank == 0)
    dist.barrier()
    print(f"rank {rank} of {world}: partitioned={is_zero3_partitioned(engine) and empty} exported", flush=True)
    dist.destroy_process_group()
    # The four DeepSpeed engines above still hold gloo groups; freeing them during interpreter finalisation has
    # aborted a rank ("terminate called without an active exception") after all of the above was done and
    # printed. What this script checks is complete here, so it leaves without finalising.
    os._exit(0)
    """
)


@pytest.mark.multiprocess
def test_zero3_resume_is_weights_only_and_export_gathers_full_weights(tiny_bert_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "zero3.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29563", str(script), str(tiny_bert_dir),
         str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-2000:] + result.stderr[-4000:]
    assert sorted(re.findall(r"rank (\d) of (\d): partitioned=True exported", out)) == [("0", "2"), ("1", "2")], out
    assert sorted(re.findall(r"rank (\d): resumed_equal=True files_read=\d+ optim_read=True", out)) == ["0", "1"], out
    assert sorted(re.findall(r"rank (\d): tampered=refused UnpicklingError", out)) == ["0", "1"], out
    assert not list(tmp_path.glob("ran-code-*"))

    original = load_model(tiny_bert_dir, kind="de", pooling="mean", similarity="cos").state_dict()
    exported = load_model(tmp_path / "export").state_dict()
    assert exported.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor), name
