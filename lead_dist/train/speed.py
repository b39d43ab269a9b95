"""The step's speed switches (`train.speed`, issue 13): what each resolves to on a device, and applying them to the
models once at set-up.

- `chunk_size`: length-sorted chunked encoding (train/chunking.py): the same representations with less padding.
- `teacher_bf16`: a frozen teacher cast to bf16 once at load. Under bf16 autocast the teacher's matmuls then take
  its weights as they are; held in fp32, autocast copies every weight to bf16 in every forward (`aten::copy_`, 12 %
  of a frozen step's GPU kernel time in the H100 profile). The results are those of autocast up to bf16 rounding of
  the non-matmul parameters (layer norms, biases, embeddings), within the bounds the bf16 run already has.
- `compile`: every transformer block of every model outside DeepSpeed is compiled (`nn.Module.compile`), block by
  block: the blocks of one model share their code, so one compiled graph per input shape serves them all, and the
  layer-capture hooks on the blocks run outside the compiled code. Sequence lengths are rounded up to a multiple
  of `length_bucket` so the shapes, and with them the recompiles, stay few; `CompileCounter` counts the graphs
  compiled, which the loop logs as `recompiles`. DeepSpeed engines are left eager (ZeRO-3 gathers parameters in
  hooks around each module's forward, which compiled graphs would have to trace).

Defaults (`null` in the config), the fastest correct choice per device; measured on CPU by `benchmarks/throughput`
(`speed` section), reasoned for CUDA until the GPU run measures it (lead_dist/train/README.md, "Speed").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from lead_dist.config import Config
from lead_dist.train.chunking import Chunking

# Texts per chunk when `train.speed.chunk_size` is null. CPU: measured (benchmarks/throughput, speed section); CUDA:
# 64 texts of up to 256 tokens are 16k tokens per matmul, enough rows to keep an H100's tensor cores busy.
DEFAULT_CHUNK_SIZE = {"cpu": 16, "cuda": 64}
# Compiling pays on CUDA (fused element-wise kernels, fewer launches); on CPU the compile time of each new shape
# outweighs what a short run saves (measured, README "Speed").
DEFAULT_COMPILE = {"cpu": False, "cuda": True}
# Graphs dynamo keeps per code object (its default 8 would fall back to eager after 8 shapes): queries and passages,
# full and last chunks, times the length buckets of 512 tokens at bucket 16.
RECOMPILE_LIMIT = 256


@dataclasses.dataclass(frozen=True)
class Speed:
    """`train.speed` resolved for one device."""

    chunk_size: int
    teacher_bf16: bool
    compile: bool
    length_bucket: int  # 1 unless compiled

    @property
    def chunking(self) -> Chunking:
        return Chunking(size=self.chunk_size, bucket=self.length_bucket)


def teacher_bf16_applies(config: Config) -> bool:
    """A frozen teacher under bf16 autocast outside DeepSpeed (DeepSpeed holds its own bf16 copy already)."""
    teacher = config.teacher
    return (
        config.stage == "distill"
        and config.mode != "contrastive"
        and teacher is not None
        and not teacher.trained
        and teacher.deepspeed is None
        and config.train.mixed_precision == "bf16"
    )


def resolve(config: Config, device: torch.device | str) -> Speed:
    """The switches for `device`: each set key as given, each null one the device's default."""
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    speed = config.train.speed
    chunk_size = speed.chunk_size if speed.chunk_size is not None else DEFAULT_CHUNK_SIZE[kind]
    teacher_bf16 = teacher_bf16_applies(config) if speed.teacher_bf16 is None else speed.teacher_bf16
    compiled = DEFAULT_COMPILE[kind] if speed.compile is None else speed.compile
    return Speed(chunk_size, teacher_bf16, compiled, speed.length_bucket if compiled else 1)


class CompileCounter:
    """A torch.compile backend that counts the graphs it compiles (one per new shape or guard failure) and hands
    each to the real backend (`inductor`, or `aot_eager` where no C++ compiler is wanted)."""

    def __init__(self, backend: str = "inductor") -> None:
        self.backend = backend
        self.count = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        from torch._dynamo import lookup_backend

        self.count += 1
        return lookup_backend(self.backend)(graph, example_inputs)


def compile_blocks(model: nn.Module, counter: CompileCounter) -> int:
    """Compile each transformer block of `model`'s backbone in place; returns how many. The parameters and the
    state dict keep their names (checkpoints and exports do not change)."""
    from lead_dist.models.backbone import blocks_of

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, RECOMPILE_LIMIT)
    blocks = blocks_of(model.backbone)
    for block in blocks:
        block.compile(backend=counter, dynamic=False)
    return len(blocks)


def apply_to_models(
    config: Config, models: dict[str, nn.Module], speed: Speed, backend: str = "inductor"
) -> CompileCounter | None:
    """At set-up, before the engines wrap the models: cast a frozen teacher to bf16, compile the blocks (with
    `backend`: the tests pass `aot_eager`). Returns the compile counter (None when nothing is compiled)."""
    if speed.teacher_bf16 and "teacher" in models:
        models["teacher"].to(torch.bfloat16)
    if not speed.compile:
        return None
    counter = CompileCounter(backend)
    for name, model in models.items():
        section = getattr(config, name)
        if section is None or section.deepspeed is None:
            compile_blocks(model, counter)
    return counter
