"""Does a checkpoint fit this run? Asked by `resume.restore` before anything is loaded, so a mismatch is one line
(exit code 2) naming what differs, never a 64-line size-mismatch traceback from deep inside a loader:

    shapes.json     every trained model's parameter shapes (the full shapes under ZeRO-3), written with the weights;
                    a parameter the config now builds in another shape (`teacher.config.hidden_size=64` on resume)
                    or a parameter only one side has is named with both shapes
    train_shards    the digest of data.train's shard list (names and sha256, as the prepared manifest lists them:
                    `teacher_cache.fingerprint.shards_digest`, which a teacher cache records too), kept in
                    TrainState; a resume on other shards is refused with both digests

Why refuse other shards rather than warn: `--resume` promises an exact continuation, and the data cursor it restores
(epoch, position in the shard plan) means nothing on other shards; continuing would silently train on a mixture.
Training on new data from a trained model is a new run: a new output_dir whose `student.path` is the old export.

A checkpoint written before these records (no shapes.json, an empty digest) is loaded as before; the missing check
is said once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lead_dist.errors import UsageError

if TYPE_CHECKING:
    from lead_dist.config import Config
    from lead_dist.train.trainee import Trainee

SHAPES_FILE = "shapes.json"


def parameter_shapes(trainees: dict[str, Trainee]) -> dict[str, dict[str, list[int]]]:
    """{trained model: {parameter: shape}}; under ZeRO-3 a partitioned parameter's full shape (`ds_shape`)."""
    return {
        name: {key: list(getattr(param, "ds_shape", param.shape)) for key, param in trainee.model.named_parameters()}
        for name, trainee in trainees.items()
        if trainee.trained
    }


def save_shapes(trainees: dict[str, Trainee], directory: Path) -> None:
    """Main process, inside the checkpoint being written."""
    (directory / SHAPES_FILE).write_text(json.dumps(parameter_shapes(trainees), indent=1, sort_keys=True) + "\n")


def _first_difference(name: str, stored: dict[str, list[int]], built: dict[str, list[int]]) -> str | None:
    """The first parameter of model `name` whose shape differs, or that only one side has, in words."""
    for key in sorted(stored.keys() & built.keys()):
        if stored[key] != built[key]:
            others = sum(1 for k in stored.keys() & built.keys() if stored[k] != built[k]) - 1
            more = f" ({others} more parameters differ)" if others else ""
            return f"{name} parameter {key} has shape {stored[key]} in the checkpoint, {built[key]} in the model the config builds{more}"
    only_stored, only_built = sorted(stored.keys() - built.keys()), sorted(built.keys() - stored.keys())
    if only_stored or only_built:
        return (
            f"the checkpoint's {name} has {len(only_stored)} parameters the model the config builds lacks"
            f"{f' (first {only_stored[0]})' if only_stored else ''} and lacks {len(only_built)} it has"
            f"{f' (first {only_built[0]})' if only_built else ''}"
        )
    return None


def check_shapes(trainees: dict[str, Trainee], directory: Path, *, announce: bool) -> None:
    """UsageError naming the first parameter of a trained model that does not fit the checkpoint's."""
    path = directory / SHAPES_FILE
    if not path.is_file():
        if announce:
            print(f"lead-dist train: {directory} records no parameter shapes (written before they were); "
                  "loading it unchecked", file=sys.stderr, flush=True)  # fmt: skip
        return
    stored: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    built = parameter_shapes(trainees)
    for name in sorted(stored.keys() | built.keys()):
        if name not in built or name not in stored:
            side = "the checkpoint" if name in stored else "this run"
            raise UsageError(
                f"--resume: {directory}: only {side} trains a {name}; resume with the config it was saved with"
            )
        difference = _first_difference(name, stored[name], built[name])
        if difference is not None:
            raise UsageError(
                f"--resume: {directory}: {difference}; resume with the config the checkpoint was trained with "
                f"(run.json in {directory.parent} holds it), or start a new run"
            )


def check_train_shards(saved: str, current: str, directory: Path, config: Config, *, announce: bool) -> None:
    """UsageError when the checkpoint was trained on other shards than data.train names now (both digests)."""
    if not saved:
        if announce:
            print(f"lead-dist train: {directory} records no digest of its training shards (written before it was); "
                  "data.train is not compared", file=sys.stderr, flush=True)  # fmt: skip
        return
    if saved != current:
        raise UsageError(
            f"--resume: {directory} was trained on other shards (digest {saved}) than data.train={config.data.train} "
            f"holds now (digest {current}); an exact resume needs the same shards: restore them, or train the new "
            "data in a new run (another output_dir, student.path = this run's export)"
        )
