"""The training loop: warm-up of one model, or distillation of a student from a teacher (LEAD, response, contrastive).

Read `train` top to bottom: set-up (engines, models, data, resume), then one optimizer step per iteration:
draw this step's layer pairs, run `grad_accum` micro-batches (forward through the objective, a non-finite check
agreed by every rank, backward through each model's engine), step the optimizers, log, checkpoint. At the end the
student (and a trained teacher, or the warm-up model) is exported.

Everything a resume needs is in the checkpoint: the engines' weights and optimizers and the LR schedules
(`engines.save_trainees`), the data cursor, the counters, and every rank's RNG (`train/checkpoint.py`). The layer
pairs are a pure function of (seed, step), so `--resume latest` continues exactly where the run stopped.

Test hooks (environment variables, read only here): LEAD_DIST_TEST_NAN_AT_STEPS="3,4" makes the loss of those
optimizer steps NaN; LEAD_DIST_TEST_SLEEP_IN_SAVE=STEP:SECONDS sleeps inside the checkpoint write of that step,
after every file is written and before the directory is committed; LEAD_DIST_TEST_STEP_SLEEP=SECONDS sleeps after
every step (so a test can kill a run between checkpoints); LEAD_DIST_TEST_HANG_RANK=R:STEP makes rank R stop
responding at that step (to test the others' timeout).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lead_dist.config import Config
from lead_dist.train import engines, setup
from lead_dist.train.dev_eval import evaluate_on_dev, load_dev_set
from lead_dist.train.faults import Watchdog, collective_failures_explained
from lead_dist.train.setup import Trainee

# ----------------------------------------------------------------------------------------------------------------
# set-up helpers


def _endless(stream: Any) -> Iterator[list[dict]]:
    """This rank's batches, epoch after epoch; the stream's cursor survives a resume mid-epoch."""
    while True:
        yield from stream
        stream.set_epoch(stream.epoch + 1)


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _collate(config: Config, trainees: dict[str, Trainee], examples: list[dict], device: torch.device) -> dict:
    from lead_dist.data import collate_for

    lengths = (config.data.query_max_length, config.data.passage_max_length)
    if config.stage == "warmup":
        batch = collate_for(trainees["model"].raw, examples, *lengths)
        return _to_device(batch, device) | {"group_size": 1 + config.data.num_negatives}
    return {name: _to_device(collate_for(t.raw, examples, *lengths), device) for name, t in trainees.items()}


def step_loss(config: Config, trainees: dict[str, Trainee], batch: dict, layers: tuple) -> tuple[torch.Tensor, dict]:
    """The loss of one micro-batch as the loop computes it (warm-up or distillation); benchmarks time this too."""
    from lead_dist.train.objective import distill_loss, warmup_loss

    if config.stage == "warmup":
        return warmup_loss(trainees["model"].model, batch, config.candidates)
    teacher = trainees.get("teacher")
    return distill_loss(
        trainees["student"].model,
        teacher.model if teacher is not None and config.mode != "contrastive" else None,
        batch,
        layers[0],
        layers[1],
        config.lead,
        teacher_trained=teacher is not None and teacher.trained,
        candidates=config.candidates,
        mode=config.mode or "lead",
    )


def all_ranks_finite(total: torch.Tensor) -> bool:
    """True only when the loss is finite on EVERY rank, so all ranks take the same branch (no collective hangs)."""
    bad = torch.tensor([0.0 if torch.isfinite(total.detach()).all() else 1.0], device=total.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bool(bad.item() == 0.0)


def _mean_over_ranks(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar loss terms averaged over ranks (one small collective), for logging."""
    from lead_dist.distributed import all_reduce_mean

    scalars = {k: v.detach().float() for k, v in terms.items() if isinstance(v, torch.Tensor) and v.dim() == 0}
    if not scalars:
        return {}
    stacked = all_reduce_mean(torch.stack(list(scalars.values())))
    return {k: float(v) for k, v in zip(scalars, stacked.tolist(), strict=True)}


def _step_work(trainees: dict[str, Trainee], batch: dict, warmup: bool) -> tuple[int, int]:
    """(FLOPs, non-pad tokens) this rank spent on the step's encoders (see train/flops.py)."""
    from lead_dist.train.flops import ModelWork, TransformerShape, step_flops, tensor_shape

    works, tokens = [], 0
    for name, trainee in trainees.items():
        inputs = batch if warmup else batch[name]
        tokenized = [v for v in inputs.values() if isinstance(v, dict) and "input_ids" in v]
        tokens += sum(int(t["attention_mask"].sum()) for t in tokenized)
        shapes = tuple(tensor_shape(t) for t in tokenized)
        works.append(ModelWork(TransformerShape.of_model(trainee.raw), shapes, trainee.trained))
    return step_flops(works), tokens


def _test_hook_steps(name: str) -> set[int]:
    raw = os.environ.get(name, "")
    return {int(s) for s in raw.split(",") if s.strip()}


def _maybe_hang(rank: int, step: int) -> None:
    spec = os.environ.get("LEAD_DIST_TEST_HANG_RANK", "")
    if spec and spec.split(":") == [str(rank), str(step)]:
        while True:  # a stuck rank: the others must notice through their timeout
            time.sleep(3600)


def save_checkpoint(
    config: Config, accelerator: Any, trainees: dict[str, Trainee], state: Any, scaler: Any
) -> Path | None:
    """One atomic checkpoint of everything (see train/checkpoint.py for the protocol and its two barriers)."""
    from lead_dist.train import checkpoint, checkpoint_contents

    out = Path(config.output_dir)
    final = None
    with checkpoint.atomic_checkpoint_dir(
        out, state.step, is_main=accelerator.is_main_process, token=str(state.step)
    ) as tmp:
        engines.save_trainees(trainees, tmp, is_main=accelerator.is_main_process, scaler=scaler)
        if accelerator.is_main_process:
            checkpoint.save_train_state(tmp, state)
        checkpoint_contents.save_rng_state(tmp, rank=accelerator.process_index)
        hook = os.environ.get("LEAD_DIST_TEST_SLEEP_IN_SAVE", "")
        if hook and int(hook.split(":")[0]) == state.step:
            time.sleep(float(hook.split(":")[1]))  # a test kills the run here, mid-write
        accelerator.wait_for_everyone()  # every rank's files are on disk before the main process commits
    accelerator.wait_for_everyone()  # nobody prunes or reads before the rename is done
    if accelerator.is_main_process:
        checkpoint.keep_last(out, config.train.keep_last)
        final = out / checkpoint.checkpoint_name(state.step)
    return final


# ----------------------------------------------------------------------------------------------------------------
# the loop


def train(config: Config, resume: str | None = None) -> dict[str, Any]:
    """Run the configured training under the current launch (one process, DDP or DeepSpeed). Returns a summary."""
    from lead_dist.train import checkpoint, checkpoint_contents
    from lead_dist.train.export import export_dir, export_model
    from lead_dist.train.log import TrainLogger

    run = setup.set_up(config)
    accelerator, trainees, stream, schedule = run.accelerator, run.trainees, run.stream, run.schedule
    rank, world, is_main, device = run.rank, run.world, run.is_main, run.device
    out, total_steps, scaler, peak = run.out, run.total_steps, run.scaler, run.peak_flops
    warmup = config.stage == "warmup"

    # Resume: every rank reads the same committed checkpoint (stale temp dirs are cleared first by the main one).
    if is_main:
        checkpoint.clean_incomplete(out)
    accelerator.wait_for_everyone()
    state = checkpoint.TrainState()
    resumed_from = checkpoint.resolve_resume(out, resume)
    if resumed_from is not None:
        engines.load_trainees(trainees, resumed_from, scaler=scaler)
        state = checkpoint.load_train_state(resumed_from)
        stream.load_state_dict(state.data)
        checkpoint_contents.load_rng_state(resumed_from, rank=rank)
    else:
        torch.manual_seed(config.seed + rank)  # each rank its own dropout stream
    if is_main:
        setup.write_run_file(run, resumed_from=str(resumed_from) if resumed_from else None)

    dev = load_dev_set(config)
    nan_steps = _test_hook_steps("LEAD_DIST_TEST_NAN_AT_STEPS")
    batches = _endless(stream)
    grad_accum = config.train.grad_accum
    exported: dict[str, str] = {}

    with contextlib.ExitStack() as cleanup:
        logger = cleanup.enter_context(
            TrainLogger(
                out, total_steps=total_steps, log_every=config.train.log_every, is_main=is_main,
                start_step=state.step, peak_flops=peak, device=device,
            )
        )  # fmt: skip
        watchdog = Watchdog(config.train.rank_timeout_s, rank).start()
        cleanup.callback(watchdog.stop)
        cleanup.enter_context(collective_failures_explained(rank, world, config.train.rank_timeout_s))

        while state.step < total_steps:
            started = time.perf_counter()
            step = state.step
            _maybe_hang(rank, step)
            layers = schedule.at(step) if schedule is not None else ((), ())

            # ---- forward + backward over the micro-batches of this optimizer step
            step_terms: dict[str, float] = {}
            layer_weights = None
            nonfinite_micro = 0
            flops, tokens = 0, 0
            for micro in range(grad_accum):
                batch = _collate(config, trainees, next(batches), device)
                with engines.micro_step(trainees, boundary=micro == grad_accum - 1):
                    with engines.capture_outputs(trainees) as captured, engines.autocast(config, device):
                        total, terms = step_loss(config, trainees, batch, layers)
                    if step in nan_steps:
                        total = total * float("nan")
                    finite = all_ranks_finite(total)  # the same answer on every rank
                    nonfinite_micro += 0 if finite else 1
                    # A bad loss without accumulation skips the backward (no gradient, no step). With accumulation
                    # every micro-batch still runs its backward, with zero gradient, so the engines stay in step.
                    if finite or grad_accum > 1:
                        engines.backward(trainees, total, captured, finite=finite, grad_accum=grad_accum, scaler=scaler)
                for key, value in _mean_over_ranks({"total": total, **terms}).items():
                    step_terms[key] = step_terms.get(key, 0.0) + value / grad_accum
                layer_weights = terms.get("layer_weights", layer_weights)
                micro_flops, micro_tokens = _step_work(trainees, batch, warmup)
                flops, tokens = flops + micro_flops, tokens + micro_tokens

            # ---- optimizer step (skipped when the only micro-batch was not finite)
            learning_rates = {name: t.lr for name, t in trainees.items() if t.trained}  # what this step used
            skipped = nonfinite_micro == grad_accum == 1
            grad_norms = {} if skipped else engines.optimizer_step(trainees, scaler)
            state.step = step + 1
            state.examples_seen += grad_accum * config.train.batch_size * world
            state.data = stream.state_dict()
            if nonfinite_micro:
                state.nonfinite_in_row += 1
                state.nonfinite_total += nonfinite_micro
                logger.log_event(
                    "nonfinite_loss", state.step, skipped=skipped, micro_batches=nonfinite_micro,
                    in_row=state.nonfinite_in_row, total=state.nonfinite_total,
                )  # fmt: skip
                if state.nonfinite_in_row >= config.train.max_nonfinite_in_row:
                    raise FloatingPointError(
                        f"non-finite loss in {state.nonfinite_in_row} steps in a row (step {state.step}; "
                        f"train.max_nonfinite_in_row={config.train.max_nonfinite_in_row}); lower the learning "
                        "rates, enable gradient clipping or check the data"
                    )
            else:
                state.nonfinite_in_row = 0

            # ---- log, evaluate, checkpoint
            logger.log_step(
                state.step,
                losses={k: v for k, v in step_terms.items() if math.isfinite(v) or k == "total"},
                seconds=time.perf_counter() - started,
                examples=grad_accum * config.train.batch_size,
                tokens=tokens,
                learning_rates=learning_rates,
                layer_pairs=layers if schedule is not None else None,
                layer_weights=layer_weights,
                step_flops=flops,
                extra={"grad_norm": grad_norms, "world_size": world, "epoch": stream.epoch},
            )
            if dev is not None and state.step % config.train.eval_every == 0:
                with watchdog.paused():
                    logger.log_event("eval", state.step, **evaluate_on_dev(config, trainees, dev, world))
            save_every = config.train.save_every
            if save_every and (state.step % save_every == 0 or state.step == total_steps):
                with watchdog.paused():
                    path = save_checkpoint(config, accelerator, trainees, state, scaler)
                logger.log_event("checkpoint", state.step, path=str(path) if path else None)
            watchdog.beat()
            time.sleep(float(os.environ.get("LEAD_DIST_TEST_STEP_SLEEP", "0") or 0))

        # ---- export the trained models (every rank takes part: ZeRO-3 gathers the weights)
        with watchdog.paused():
            for name, trainee in trainees.items():
                if trainee.trained:
                    exported[name] = str(export_model(trainee.model, export_dir(out, name), is_main=is_main))
            accelerator.wait_for_everyone()
        logger.log_event("exported", state.step, **exported)
    accelerator.end_training()
    return {
        "steps": state.step,
        "world_size": world,
        "rank": rank,
        "exported": exported,
        "nonfinite_total": state.nonfinite_total,
    }
