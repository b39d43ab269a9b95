"""The few process-group helpers retrieval needs: rank/world from the launcher, object gathers, a barrier.

Kept local (torch.distributed only) so encoding and search run the same under torchrun, accelerate launch or alone.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as torch_dist


def init_from_env() -> tuple[int, int]:
    """(rank, world_size); joins the process group a launcher described in the environment (WORLD_SIZE > 1)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            torch_dist.init_process_group("nccl")
        else:
            torch_dist.init_process_group("gloo")
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def rank_and_world() -> tuple[int, int]:
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (just [obj] when alone)."""
    _rank, world = rank_and_world()
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if rank_and_world()[1] > 1:
        torch_dist.barrier()


def contiguous_share(count: int, rank: int, world: int) -> range:
    """Rank's contiguous slice of `count` items; sizes differ by at most one, earlier ranks take the extra."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))
