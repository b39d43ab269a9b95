"""What goes inside a checkpoint besides the directory protocol of `checkpoint.py`: every RNG of a rank, plain
module / optimizer / scheduler state, and weights-only loading of DeepSpeed's shards. Everything here is loaded
with `torch.load(weights_only=True)`. torch and numpy are imported inside the functions (see checkpoint.py).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def rng_file(rank: int) -> str:
    return f"rng-rank{rank:05d}.pt"


def capture_rng_state() -> dict[str, Any]:
    """Every RNG this process draws from, as tensors and ints only (loadable with weights_only=True)."""
    import numpy as np
    import torch

    version, mt_words, gauss_next = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt_words, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng_state`. CUDA states are restored when present and CUDA is available."""
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) != torch.cuda.device_count():
            raise ValueError(
                f"checkpoint holds RNG states of {len(cuda_states)} CUDA devices, this process sees "
                f"{torch.cuda.device_count()}; resume with the same devices visible per process"
            )
        torch.cuda.set_rng_state_all(cuda_states)


def save_rng_state(directory: str | Path, rank: int = 0) -> Path:
    """Every rank writes its own RNG file into the checkpoint directory."""
    import torch

    path = Path(directory) / rng_file(rank)
    torch.save(capture_rng_state(), path)
    return path


def load_rng_state(directory: str | Path, rank: int = 0) -> None:
    import torch

    path = Path(directory) / rng_file(rank)
    if not path.is_file():
        present = sorted(p.name for p in Path(directory).glob("rng-rank*.pt"))
        raise FileNotFoundError(
            f"{path}: no RNG state for rank {rank} (checkpoint has {present}); resume with the world size it was "
            f"saved with"
        )
    restore_rng_state(torch.load(path, map_location="cpu", weights_only=True))


# ---------------------------------------------------------------------------------------------------------------
# plain modules, optimizers and schedulers (no accelerate / DeepSpeed)


def save_module_weights(model: torch.nn.Module, path: str | Path) -> Path:
    """Weights as safetensors (shared/tied tensors handled). Main process only."""
    from safetensors.torch import save_model

    from lead_dist.distributed import unwrap

    path = Path(path)
    save_model(unwrap(model), str(path))
    return path


def load_module_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Strict load: a missing or unexpected key is an error naming the keys (never silently skipped)."""
    from safetensors.torch import load_model

    from lead_dist.distributed import unwrap

    missing, unexpected = load_model(unwrap(model), str(path), strict=False)
    if missing or unexpected:
        raise KeyError(
            f"{path}: weights do not fit the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )


def save_object_state(obj: Any, path: str | Path) -> Path:
    """`obj.state_dict()` of an optimizer or LR scheduler, loadable with weights_only=True."""
    import torch

    path = Path(path)
    torch.save(obj.state_dict(), path)
    return path


# The only non-tensor classes DeepSpeed 0.19 pickles into its ZeRO-2/3 checkpoint files (fp32 and bf16; found by
# loading such checkpoints with weights_only=True), plus the fp16 dynamic loss scaler beside its parent class.
# They are plain data holders: allowing them lets weights_only=True load DeepSpeed checkpoints without running code.
DEEPSPEED_SAFE_GLOBALS = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def _resolve_global(dotted: str) -> Any:
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def weights_only_deepspeed_loading(engine: Any) -> None:
    """Make a DeepSpeed engine read checkpoints with `torch.load(weights_only=True)` (its default is False).

    Call once per engine after `accelerator.prepare` / `deepspeed.initialize`, before `accelerator.load_state` or
    `engine.load_checkpoint`; both read every model and ZeRO shard through `engine.checkpoint_engine.load`, which
    this replaces. A file that needs any class beyond `DEEPSPEED_SAFE_GLOBALS` then fails to load instead of
    running code. (DeepSpeed's universal-checkpoint conversion reads files on its own and is not covered.)
    """
    import torch

    allowed = [_resolve_global(name) for name in DEEPSPEED_SAFE_GLOBALS]

    def load(path: str, map_location: Any = None) -> Any:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)

    checkpoint_engine = getattr(engine, "checkpoint_engine", None)
    if checkpoint_engine is None:
        raise TypeError(f"{type(engine).__name__} has no checkpoint_engine; expected an initialised DeepSpeedEngine")
    checkpoint_engine.load = load


def load_object_state(obj: Any, path: str | Path) -> None:
    import torch

    obj.load_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))
