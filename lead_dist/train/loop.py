"""The training loop: warm-up of one model, or distillation of a student from a teacher (LEAD, response, contrastive).

Read `train` top to bottom: set-up (engines, models, data, resume), then one optimizer step per iteration:
draw this step's layer pairs, run `grad_accum` micro-batches (forward through the objective, a non-finite check
agreed by every rank, backward through each model's engine), step the optimizers, log, checkpoint. At the end the
student (and a trained teacher, or the warm-up model) is exported.

Everything a resume needs is in the checkpoint: the engines' weights and optimizers and the LR schedules
(`step_module.save_trainees`), the data cursor, the counters, and every rank's RNG (`train/checkpoint.py`). The layer
pairs are a pure function of (seed, step), so `--resume latest` continues exactly where the run stopped.

Test hooks (environment variables, read only here): LEAD_DIST_TEST_NAN_AT_STEPS="3,4" makes the loss of those
optimizer steps NaN; LEAD_DIST_TEST_SLEEP_IN_SAVE=STEP:SECONDS sleeps inside the checkpoint write of that step,
after every file is written and before the directory is committed; LEAD_DIST_TEST_STEP_SLEEP=SECONDS sleeps after
every step (so a test can kill a run between checkpoints); LEAD_DIST_TEST_HANG_RANK=R:STEP makes rank R stop
responding at that step (to test the others' timeout).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Iterator
from typing import Any

from lead_dist.config import Config
from lead_dist.train import resume as resume_module
from lead_dist.train import setup
from lead_dist.train.dev_eval import evaluate_on_dev, load_dev_set
from lead_dist.train.faults import TestHooks, Watchdog, collective_failures_explained
from lead_dist.train.step import collate, record_nonfinite, run_step

# ----------------------------------------------------------------------------------------------------------------
# set-up helpers


def _endless(stream: Any) -> Iterator[list[dict]]:
    """This rank's batches, epoch after epoch; the stream's cursor survives a resume mid-epoch."""
    while True:
        yield from stream
        stream.set_epoch(stream.epoch + 1)


# ----------------------------------------------------------------------------------------------------------------
# the loop


def train(config: Config, resume: str | None = None) -> dict[str, Any]:
    """Run the configured training under the current launch (one process, DDP or DeepSpeed). Returns a summary."""
    from lead_dist.train.export import export_dir, export_model
    from lead_dist.train.log import TrainLogger

    run = setup.set_up(config)
    accelerator, trainees, stream, schedule = run.accelerator, run.trainees, run.stream, run.schedule
    rank, world, is_main, device = run.rank, run.world, run.is_main, run.device
    out, total_steps, scaler, peak = run.out, run.total_steps, run.scaler, run.peak_flops

    hooks = TestHooks.from_env()
    state, resumed_from = resume_module.restore(run, resume)
    if is_main:
        setup.write_run_file(run, resumed_from=str(resumed_from) if resumed_from else None)

    dev = load_dev_set(config)
    batches = _endless(stream)
    micro_batches = (collate(config, trainees, next(batches), device) for _ in itertools.count())
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
            hooks.hang_if_chosen(rank, step)
            layers = run.layers_at(step)
            result = run_step(
                config, trainees, micro_batches, layers, device=device, scaler=scaler, poison=hooks.poisons(step)
            )
            state.step = step + 1
            state.examples_seen += grad_accum * config.train.batch_size * world
            state.data = stream.state_dict()
            record_nonfinite(state, result, config.train.max_nonfinite_in_row, logger.log_event)

            # ---- log, evaluate, checkpoint
            logger.log_step(
                state.step,
                losses={k: v for k, v in result.losses.items() if math.isfinite(v) or k == "total"},
                seconds=time.perf_counter() - started,
                examples=grad_accum * config.train.batch_size,
                tokens=result.tokens,
                learning_rates=result.learning_rates,
                layer_pairs=layers if schedule is not None else None,
                layer_weights=result.layer_weights,
                step_flops=result.flops,
                extra={"grad_norm": result.grad_norms, "world_size": world, "epoch": stream.epoch},
            )
            if dev is not None and state.step % config.train.eval_every == 0:
                with watchdog.paused():
                    logger.log_event("eval", state.step, **evaluate_on_dev(config, trainees, dev, world))
            save_every = config.train.save_every
            if save_every and (state.step % save_every == 0 or state.step == total_steps):
                with watchdog.paused():
                    path = resume_module.save_checkpoint(run, state, hooks)
                logger.log_event("checkpoint", state.step, path=str(path) if path else None)
            watchdog.beat()
            hooks.after_step()

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
