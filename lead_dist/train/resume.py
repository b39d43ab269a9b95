"""What is in a checkpoint? Everything a resume needs, written into the atomic directory of `checkpoint.py`:

    step-000100/
      COMPLETE, train_state.json   the directory protocol and TrainState (checkpoint.py): step, data cursor, counters
      rng-rank00000.pt ...         every RNG of each rank (python, numpy, torch CPU, CUDA), tensors and ints only
      student.safetensors          a trained model's weights          } plain module or DDP (main process writes)
      student-optimizer.pt         its AdamW state                    }
      student/                     or: its DeepSpeed checkpoint (tag = the model's name; ZeRO shards of every rank)
      student-schedule.pt          its LR schedule (either engine)
      teacher...                   the same for a trained teacher ("model..." in the warm-up stage)
      grad-scaler.pt               the fp16 GradScaler, when there is one
      shapes.json                  every trained model's parameter shapes (checkpoint_fit.py: checked before loading)

A frozen teacher is rebuilt from its config, never saved. The layer pairs are a pure function of (seed, step), so
nothing about them is stored. Everything here is loaded with `torch.load(weights_only=True)`, DeepSpeed's shards
included (`weights_only_deepspeed_loading`). `save_checkpoint` writes one checkpoint on every rank, `restore` is the
loop's resume (or, without one, its seeding). torch and numpy are imported inside the functions (see checkpoint.py).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lead_dist.errors import UsageError
from lead_dist.train import checkpoint
from lead_dist.train.checkpoint_fit import check_shapes, check_train_shards, save_shapes

if TYPE_CHECKING:
    import torch

    from lead_dist.train.faults import TestHooks
    from lead_dist.train.setup import Run
    from lead_dist.train.trainee import Trainee


def weights_only_load(path: str | Path, map_location: Any = "cpu", allowed: list[Any] | None = None) -> Any:
    """`torch.load(weights_only=True)`; a file that needs code to load is refused by name (UnpicklingError whose
    message starts with the path), never run."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(allowed or []):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise pickle.UnpicklingError(
            f"{path}: refused to load, it holds more than tensors and plain data (loading it could run code): {reason}"
        ) from None


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

    path = Path(directory) / rng_file(rank)
    if not path.is_file():
        present = sorted(p.name for p in Path(directory).glob("rng-rank*.pt"))
        raise FileNotFoundError(
            f"{path}: no RNG state for rank {rank} (checkpoint has {present}); resume with the world size it was "
            f"saved with"
        )
    restore_rng_state(weights_only_load(path))


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
    """Strict load: a missing or unexpected key is an error naming the first of them and the counts (never silently
    skipped; a checkpoint's shapes.json has already named a shape that differs)."""
    from safetensors.torch import load_model

    from lead_dist.distributed import unwrap

    missing, unexpected = load_model(unwrap(model), str(path), strict=False)
    if missing or unexpected:
        first = sorted(missing)[:1] or sorted(unexpected)[:1]
        raise UsageError(
            f"{path}: weights do not fit the model: {len(missing)} missing, {len(unexpected)} unexpected (first "
            f"{first[0]}); resume with the config the checkpoint was trained with"
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
    allowed = [_resolve_global(name) for name in DEEPSPEED_SAFE_GLOBALS]

    def load(path: str, map_location: Any = None) -> Any:
        return weights_only_load(path, map_location, allowed)

    checkpoint_engine = getattr(engine, "checkpoint_engine", None)
    if checkpoint_engine is None:
        raise TypeError(f"{type(engine).__name__} has no checkpoint_engine; expected an initialised DeepSpeedEngine")
    checkpoint_engine.load = load


def load_object_state(obj: Any, path: str | Path) -> None:
    obj.load_state_dict(weights_only_load(Path(path)))


# ----------------------------------------------------------------------------------------------------------------
# the trainees, a whole checkpoint, and the loop's resume


def save_trainees(trainees: dict[str, Trainee], directory: Path, *, is_main: bool, scaler: Any = None) -> None:
    """Write every trained model's part (train/trainee.py: weights, optimizer, schedule) into `directory`, the
    GradScaler and the parameter shapes (call on EVERY rank)."""
    for trainee in trainees.values():
        trainee.save(directory, is_main=is_main)
    if scaler is not None and is_main:
        save_object_state(scaler, directory / "grad-scaler.pt")
    if is_main:
        save_shapes(trainees, directory)


def load_trainees(trainees: dict[str, Trainee], directory: Path, scaler: Any = None, *, announce: bool = False) -> None:
    """Inverse of `save_trainees`, on every rank; a model that does not fit the checkpoint is refused first."""
    check_shapes(trainees, directory, announce=announce)
    for trainee in trainees.values():
        trainee.load(directory)
    if scaler is not None:
        load_object_state(scaler, directory / "grad-scaler.pt")


def save_checkpoint(run: Run, state: checkpoint.TrainState, hooks: TestHooks) -> Path | None:
    """One atomic checkpoint of everything, on every rank (see train/checkpoint.py for the protocol and its two
    barriers). Returns the committed directory on the main process, None elsewhere."""
    accelerator, out = run.accelerator, run.out
    final = None
    with checkpoint.atomic_checkpoint_dir(out, state.step, is_main=run.is_main, token=str(state.step)) as tmp:
        save_trainees(run.trainees, tmp, is_main=run.is_main, scaler=run.scaler)
        if run.is_main:
            checkpoint.save_train_state(tmp, state)
        save_rng_state(tmp, rank=run.rank)
        hooks.pause_in_save(state.step)  # a test kills the run here, mid-write
        accelerator.wait_for_everyone()  # every rank's files are on disk before the main process commits
    accelerator.wait_for_everyone()  # nobody prunes or reads before the rename is done
    if run.is_main:
        checkpoint.keep_last(out, run.config.train.keep_last)
        final = out / checkpoint.checkpoint_name(state.step)
    return final


def restore(run: Run, resume: str | None) -> tuple[checkpoint.TrainState, Path | None]:
    """The loop's start: the state of the checkpoint `resume` names (`latest`, a directory, or None for a fresh
    start), with the trainees, the data cursor and every RNG of this rank restored; or a fresh state with this
    rank's dropout stream seeded. Every rank reads the same committed checkpoint (stale temp dirs are cleared first
    by the main process). Returns the state and the directory resumed from (None for a fresh start)."""
    import torch

    from lead_dist.teacher_cache.fingerprint import shards_digest

    if run.is_main:
        checkpoint.clean_incomplete(run.out)
    run.accelerator.wait_for_everyone()
    resumed_from = checkpoint.resolve_resume(run.out, resume, announce=run.is_main)
    shards = shards_digest(run.stream.manifest_entries)  # the manifest the stream read: no second request
    if resumed_from is None:
        if resume == "latest":
            _refuse_fresh_start_over_results(run.out)
            if run.is_main:
                print(f"lead-dist train: no checkpoint in {run.out}: starting fresh", file=sys.stderr, flush=True)
        torch.manual_seed(run.config.seed + run.rank)  # each rank its own dropout stream
        return checkpoint.TrainState(train_shards=shards), None
    state = checkpoint.load_train_state(resumed_from)
    check_train_shards(state.train_shards, shards, resumed_from, run.config, announce=run.is_main)
    state.train_shards = shards
    load_trainees(run.trainees, resumed_from, scaler=run.scaler, announce=run.is_main)
    run.stream.load_state_dict(state.data)
    load_rng_state(resumed_from, rank=run.rank)
    return state, resumed_from


def _refuse_fresh_start_over_results(out: Path) -> None:
    """`--resume latest` with no checkpoint may start afresh only where nothing of value would be overwritten: a
    new folder, or one whose run was killed before its first checkpoint (its log restarts). An exported model is a
    result: a fresh run would replace it."""
    from lead_dist.train.export import ROLES, export_dir

    exported = [export_dir(out, role) for role in ROLES if export_dir(out, role).exists()]
    if exported:
        raise UsageError(
            f"--resume latest: {out} holds no checkpoint to resume from, but an exported model ({exported[0]}) that "
            "a fresh run would replace; start over with --overwrite, or choose another output_dir"
        )
