"""Export a trained model as a folder that transformers `AutoModel` and sentence-transformers load.

The folder is whatever the model's own `save(path)` writes (lead_dist.models: backbone config + safetensors,
tokenizer, lead_dist.json, and for a dual encoder the sentence-transformers module files that give the right
pooling and normalisation). This module adds what training wraps around the model:

- Unwrapping: pass the model as training holds it: the raw module, a DDP wrapper, a DeepSpeed engine, or what
  `accelerator.prepare` returned; wrappers are peeled off (`lead_dist.distributed.unwrap`).
- ZeRO-3: parameters are partitioned across ranks, so EVERY rank must call `export_model` (the gather is a
  collective); the parameters are gathered read-only with `deepspeed.zero.GatheredParameters` and only the main
  process (`is_main=True`) writes. Without ZeRO-3 non-main ranks return at once, so calling it on all ranks is
  always right. Follow it with a barrier before anyone reads the folder.
- Atomicity: the folder is written under a temporary name beside `path` and renamed into place, so a kill never
  leaves a half-written export under the final name; an existing export at `path` is replaced.

Where exports go in a run: `export_dir(output_dir, role)` = `output_dir/export/<role>` with role `student`,
`teacher` (a trained teacher) or `model` (warm-up stage). Later stages' configs point at these folders.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lead_dist.atomic import replace_dir
from lead_dist.distributed import unwrap

if TYPE_CHECKING:
    from lead_dist.train.trainee import Trainee

ROLES = ("student", "teacher", "model")


def export_dir(output_dir: str | Path, role: str) -> Path:
    """`output_dir/export/<role>`: where a run exports its student, its trained teacher or its warm-up model."""
    if role not in ROLES:
        raise ValueError(f"export role must be one of {ROLES}, got {role!r}")
    return Path(output_dir) / "export" / role


def is_zero3_partitioned(module: torch.nn.Module) -> bool:
    """True when DeepSpeed ZeRO-3 has partitioned the module's parameters (they carry a `ds_id`)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


@contextlib.contextmanager
def gathered_parameters(module: torch.nn.Module) -> Iterator[None]:
    """Full parameters on every rank for the duration of the block (collective under ZeRO-3; else a no-op)."""
    if not is_zero3_partitioned(module):
        yield
        return
    import deepspeed  # only reached when DeepSpeed already partitioned the module

    # modifier_rank=None: read-only gather, nothing is scattered back on exit
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


def export_model(model: torch.nn.Module, path: str | Path, *, is_main: bool = True) -> Path:
    """Write `model` (wrapped or not) to the folder `path` via its own `save`; call on every rank (see module doc).

    Returns `path` on every rank. Raises TypeError if the unwrapped module has no `save(path)` method (not a
    lead_dist model).
    """
    inner = unwrap(model)
    if not callable(getattr(inner, "save", None)):
        raise TypeError(
            f"export_model: {type(inner).__name__} has no save(path); expected a lead_dist.models model "
            "(DualEncoder, ColBERT, CrossEncoder), possibly wrapped by DDP/DeepSpeed/accelerate"
        )
    final = Path(path)
    with gathered_parameters(inner):
        if is_main:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}"
            was_training = inner.training
            try:
                inner.eval()
                with torch.no_grad():
                    inner.save(tmp)
                replace_dir(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            finally:
                inner.train(was_training)
    return final


def export_trained(trainees: dict[str, Trainee], output_dir: str | Path, *, is_main: bool) -> dict[str, str]:
    """Export every trained model of a run to `export_dir(output_dir, name)`; call on every rank (ZeRO-3 gathers).
    Returns {name: folder}."""
    return {
        name: str(export_model(trainee.model, export_dir(output_dir, name), is_main=is_main))
        for name, trainee in trainees.items()
        if trainee.trained
    }
