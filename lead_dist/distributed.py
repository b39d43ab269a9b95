"""Rank helpers, unwrapping, and the gradient-carrying gather the cross-rank candidate set needs. Imports nothing
of ours, so training and retrieval share one copy of each helper.

Joining a process group: `init_from_env()` for the retrieval verbs (torchrun / accelerate launch describe the group
in the environment); the trainer's group is made by accelerate. `rank()` / `world_size()` answer 0 / 1 without one.
Whoever joins, leaves: `leave()` ends only a group `init_from_env()` made (the CLI calls it after a verb succeeds);
accelerate ends the trainer's (`end_training`), and a caller who made its own group keeps it.

Gradient scaling of `gather_with_grad` (open_clip's convention), worked out:
rank r of N holds B queries and its own candidates x_r; after the gather every rank scores its queries against
all N ranks' candidates and takes L_r = mean over its B queries. DDP (and DeepSpeed) then AVERAGE parameter
gradients: g = (1/N) sum_r dL_r/dtheta. The loss of one process on the whole N*B batch is
L = (1/(N*B)) sum over all queries = (1/N) sum_r L_r, so dL/dtheta = (1/N) sum_r dL_r/dtheta as well, PROVIDED
rank r's candidates x_r receive the gradient of every rank's loss, sum_r' dL_r'/dx_r. So the backward of the gather
hands each rank its slice of the SUM over ranks of the incoming gradients (not the mean, and not only its own
rank's gradient). With that, N ranks x B queries == 1 rank x N*B queries, loss and gradients, to rounding. Two
conditions: every rank has the same number of queries B (otherwise the per-rank means weigh queries unequally),
and any other statistic averaged over queries (LEAD's layer gaps) is averaged over all ranks too
(`all_reduce_mean`). If the per-rank loss is a SUM over queries instead, the same gather gives N times the
single-process gradient after DDP's averaging.

The backward uses all_reduce then slices (gloo has no reduce_scatter); every rank must run the backward.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "contiguous_share",
    "gather_with_grad",
    "init_from_env",
    "leave",
    "rank",
    "unwrap",
    "world_size",
]

# Shapes are exchanged as a fixed-length vector so ranks with different tensor ranks still meet in one collective.
_MAX_DIMS = 8

# Whether init_from_env made the group this process is in (then leave() ends it).
_joined_here = False


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank; 0 when torch.distributed is not initialised."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_from_env() -> tuple[int, int]:
    """(rank, world_size); joins the process group a launcher described in the environment (WORLD_SIZE > 1).

    NCCL on the GPU of LOCAL_RANK when CUDA is available, else gloo. Already in a group: that group's answer.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        global _joined_here
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
        _joined_here = True
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def leave() -> None:
    """End the process group `init_from_env` made; a group made by the caller or by accelerate is left alone.

    Why it is needed: a gloo group left for the interpreter's exit is torn down with its worker threads still
    joinable, and the process then dies of SIGABRT ("terminate called without an active exception") after its work
    succeeded. A two-rank launch that joins, gathers one object and exits died so in 10 of 20 tries on the 2-core
    build machine, and in 0 of 20 with this call before the exit (torch 2.13; pytorch/pytorch#190489).
    """
    global _joined_here
    if _joined_here and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _joined_here = False


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable `obj`, in rank order (just [obj] when alone)."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every rank (nothing to wait for when alone)."""
    if _active():
        dist.barrier()


def contiguous_share(count: int, rank: int, world: int) -> range:
    """Rank's contiguous slice of `count` items; sizes differ by at most one, earlier ranks take the extra."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / a DeepSpeed engine (`.module`) or torch.compile (`._orig_mod`) wrappers.

    Peels every layer of wrapping (accelerate may compile a DDP-wrapped model). A lead_dist model has no attribute
    named `module` or `_orig_mod`, so an unwrapped model comes back as it is.
    """
    while True:
        if isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            return model


def all_reduce_mean(x: Tensor | float) -> Tensor | float:
    """Mean of `x` over ranks, returned as a new value without gradient (for metrics and loss statistics).

    A float comes back as a float; a tensor as a tensor of the same shape on the same device.
    """
    if isinstance(x, Tensor):
        if not _active():
            return x.detach().clone()
        out = x.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / dist.get_world_size()
    if not _active():
        return float(x)
    return float(all_reduce_mean(torch.tensor(float(x), dtype=torch.float64)))


def _all_shapes(t: Tensor) -> list[tuple[int, ...]]:
    if t.dim() > _MAX_DIMS:
        raise ValueError(f"distributed gather supports tensors of at most {_MAX_DIMS} dims, got {t.dim()}")
    local = torch.full((_MAX_DIMS + 1,), -1, dtype=torch.int64, device=t.device)
    local[0] = t.dim()
    local[1 : t.dim() + 1] = torch.tensor(t.shape, dtype=torch.int64)
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    return [tuple(int(d) for d in g[1 : int(g[0]) + 1]) for g in gathered]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 (sizes may differ by rank); backward = own slice of the summed gradient."""

    @staticmethod
    def forward(ctx, t: Tensor, sizes: list[int]) -> Tensor:  # type: ignore[override]
        me = dist.get_rank()
        ctx.offset = sum(sizes[:me])
        ctx.size = sizes[me]
        longest = max(sizes)
        # all_gather needs equal shapes: pad dim 0 to the longest, cut each part back after.
        padded = t
        if t.shape[0] < longest:
            padded = torch.cat([t, t.new_zeros((longest - t.shape[0], *t.shape[1:]))], dim=0)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)], dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        summed = grad.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed[ctx.offset : ctx.offset + ctx.size], None


def _gather(t: Tensor, shapes: list[tuple[int, ...]]) -> Tensor:
    trailing = {shape[1:] for shape in shapes}
    if len(trailing) != 1:
        raise ValueError(
            f"gather_with_grad needs the same shape on every rank except dim 0; got per-rank shapes {shapes} "
            "(pad a ragged dim first, as ColBERT.pad_tokens does for token length)"
        )
    sizes = [shape[0] for shape in shapes]
    if t.dtype == torch.bool:  # gloo cannot all_gather bool; masks travel as uint8
        return _GatherWithGrad.apply(t.to(torch.uint8), sizes).bool()
    return _GatherWithGrad.apply(t, sizes)


def gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate `t` from all ranks along dim 0 (rank order), keeping the graph (see the module docstring).

    Dim 0 may differ by rank; the other dims must match. Without torch.distributed or with one rank, returns `t`.
    """
    if not _active():
        return t
    return _gather(t, _all_shapes(t))
