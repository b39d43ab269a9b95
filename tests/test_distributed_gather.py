"""gather_with_grad across 2 real gloo processes: N ranks x B queries under DDP == 1 process x N*B queries.

Every rank scores its own B queries against the passages of ALL ranks (own positive, own hard negatives, every other
query's passages), averages its loss over its own queries, and DDP averages the gradients. The single-process run
scores all N*B queries against the same N*B*(1+n) passages. Losses and gradients must agree to 1e-6, for the
contrastive loss and for the full LEAD loss with layers, a trained teacher and re-weighting on.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lead_dist import distributed
from lead_dist.lead import contrastive_loss, lead_loss

WORLD = 2
QUERIES_PER_RANK = 3
NEGATIVES = 2
GROUP = 1 + NEGATIVES
INPUT_DIM = 5
STUDENT_LAYERS, TEACHER_LAYERS = (0, 2), (1, 3)
TIMEOUT_S = 60


class TinyTower(nn.Module):
    """A stack of tanh layers whose every output is a 'layer representation' (stands in for a transformer)."""

    def __init__(self, widths: list[int], seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(a, b, generator=gen, dtype=torch.float64) / a**0.5)
            for a, b in zip(widths, widths[1:], strict=False)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        reps = []
        for weight in self.weights:
            x = torch.tanh(x @ weight)
            reps.append(x)
        return reps


class StudentAndTeacher(nn.Module):
    """One module so DDP averages the student's and the teacher's gradients in one backward."""

    def __init__(self) -> None:
        super().__init__()
        self.student = TinyTower([INPUT_DIM, 4, 4, 4], seed=11)
        self.teacher = TinyTower([INPUT_DIM, 6, 6, 6, 6], seed=12)

    def forward(self, queries: torch.Tensor, passages: torch.Tensor) -> tuple[list, list, list, list]:
        return self.student(queries), self.student(passages), self.teacher(queries), self.teacher(passages)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    queries = torch.randn(WORLD * QUERIES_PER_RANK, INPUT_DIM, generator=gen, dtype=torch.float64)
    passages = torch.randn(WORLD * QUERIES_PER_RANK * GROUP, INPUT_DIM, generator=gen, dtype=torch.float64)
    return queries, passages


def _scores(queries: list[torch.Tensor], passages: list[torch.Tensor], layers: tuple[int, ...]):
    gathered = {i: distributed.gather_with_grad(passages[i]) for i in (*layers, len(passages) - 1)}
    final = queries[-1] @ gathered[len(passages) - 1].T
    per_layer = torch.stack([queries[i] @ gathered[i].T for i in layers])
    return final, per_layer


def _step(model: nn.Module, rank: int, world: int, use_lead: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """One forward/backward of this rank's share; world=1 is the single-process run on the whole batch."""
    queries, passages = _data()
    per_rank = WORLD * QUERIES_PER_RANK // world
    local_queries = queries[rank * per_rank : (rank + 1) * per_rank]
    local_passages = passages[rank * per_rank * GROUP : (rank + 1) * per_rank * GROUP]
    # Gathered candidates are in rank order, so query i of this rank has its positive at global column
    # (rank * per_rank + i) * GROUP.
    labels = (rank * per_rank + torch.arange(per_rank)) * GROUP
    student_q, student_p, teacher_q, teacher_p = model(local_queries, local_passages)
    student_final, student_layers = _scores(student_q, student_p, STUDENT_LAYERS)
    if use_lead:
        teacher_final, teacher_layers = _scores(teacher_q, teacher_p, TEACHER_LAYERS)
        loss, _ = lead_loss(
            student_final, teacher_final, student_layers, teacher_layers, labels, gap_reduce=distributed.all_reduce_mean
        )
    else:
        loss = contrastive_loss(student_final, labels)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return float(distributed.all_reduce_mean(loss.detach())), grads


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results: dict[str, object] = {
            "world_size": distributed.world_size(),
            "rank": distributed.rank(),
            "mean_of_rank": distributed.all_reduce_mean(float(rank)),
        }
        for use_lead in (False, True):
            # The contrastive run leaves the teacher unused; DDP must be told, or it never reduces the bucket.
            model = nn.parallel.DistributedDataParallel(StudentAndTeacher(), find_unused_parameters=not use_lead)
            loss, grads = _step(model, rank, WORLD, use_lead)
            # DDP names parameters "module.<name>"; strip it to compare with the plain module.
            results[f"lead={use_lead}"] = (loss, {k.removeprefix("module."): v for k, v in grads.items()})

        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("gather")
    context = mp.start_processes(
        _worker, args=(str(out_dir / "rendezvous"), str(out_dir)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # raises if a worker failed, with its traceback
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"2-process gloo run did not finish within {TIMEOUT_S} s")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_launched_world_and_rank_helpers(two_rank_results: list[dict]) -> None:
    assert [r["world_size"] for r in two_rank_results] == [2, 2]
    assert [r["rank"] for r in two_rank_results] == [0, 1]
    assert [r["mean_of_rank"] for r in two_rank_results] == [0.5, 0.5]


@pytest.mark.parametrize("use_lead", [False, True])
def test_two_ranks_equal_one_process_on_the_whole_batch(two_rank_results: list[dict], use_lead: bool) -> None:
    single_model = StudentAndTeacher()
    single_loss, single_grads = _step(single_model, rank=0, world=1, use_lead=use_lead)
    # Sanity: the teacher is only trained (and only has gradients) in the LEAD run.
    assert any(name.startswith("teacher") for name in single_grads) == use_lead
    for result in two_rank_results:
        loss, grads = result[f"lead={use_lead}"]
        assert loss == pytest.approx(single_loss, rel=1e-6)
        assert grads.keys() == single_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, single_grads[name], rtol=1e-6, atol=1e-10, msg=name)


def test_single_process_helpers_are_identity() -> None:
    assert not dist.is_initialized()
    t = torch.randn(3, 4, requires_grad=True)
    assert distributed.gather_with_grad(t) is t
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.all_reduce_mean(2.5) == 2.5
    mean = distributed.all_reduce_mean(t)
    assert torch.equal(mean, t.detach()) and not mean.requires_grad


def test_unwrap_peels_every_layer_of_wrapping() -> None:
    class Engine(nn.Module):  # what DDP and a DeepSpeed engine look like from outside: the model as `.module`
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    inner = nn.Linear(2, 2)
    assert distributed.unwrap(inner) is inner
    assert distributed.unwrap(Engine(Engine(inner))) is inner
    assert distributed.unwrap(Engine(torch.compile(inner))) is inner  # torch.compile keeps it as `._orig_mod`
    assert distributed.unwrap(torch.compile(Engine(inner))) is inner
