"""The training loop: warm-up of one model, or distillation of a student from a teacher (LEAD, response, contrastive).

`train` reads top to bottom: set up (setup.py), resume or seed (resume.py), then one optimizer step per iteration
(step.py: this step's layer pairs, `grad_accum` micro-batches forward and backward through each model's engine, the
optimizer step), log (throughput and MFU in every record), evaluate on the dev set every `train.eval_every` steps,
save every `train.save_every` steps. At the end the student (and a trained teacher, or the warm-up model) is
exported. Which file answers which question: lead_dist/train/README.md.

Everything a resume needs is in the checkpoint (resume.py), and the layer pairs are a pure function of (seed, step),
so `--resume latest` continues exactly where the run stopped. Faults the tests inject: faults.TestHooks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

from lead_dist.config import Config
from lead_dist.train.dev_eval import evaluate_on_dev, load_dev_set
from lead_dist.train.export import export_trained
from lead_dist.train.faults import TestHooks, Watchdog, collective_failures_explained
from lead_dist.train.log import TrainLogger
from lead_dist.train.nonfinite import record_nonfinite, refuse_nonfinite_end
from lead_dist.train.output_dir import claim_output_dir
from lead_dist.train.resume import restore, save_checkpoint
from lead_dist.train.setup import build_accelerator, set_up, write_run_file
from lead_dist.train.step import collate, run_step


def train(config: Config, resume: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run the configured training under the current launch (one process, DDP or DeepSpeed). Returns a summary.

    output_dir is claimed first (train/output_dir.py): locked for this run; a used folder needs `resume` or
    `overwrite`."""
    accelerator = build_accelerator(config)  # the process group: the claim below is decided once, for every rank
    lock = claim_output_dir(config.output_dir, resume=resume, overwrite=overwrite, is_main=accelerator.is_main_process)
    try:
        return _train(config, set_up(config, accelerator), resume)
    finally:
        if lock is not None:
            lock.release()


def _train(config: Config, run: Any, resume: str | None) -> dict[str, Any]:
    hooks = TestHooks.from_env()
    state, resumed_from = restore(run, resume)
    if run.is_main:
        speed = dataclasses.asdict(run.speed) if run.speed is not None else None
        write_run_file(run, resumed_from=str(resumed_from) if resumed_from else None, speed=speed)
    dev = load_dev_set(config)
    batches = _endless(run.stream)
    micro_batches = (collate(config, run.trainees, next(batches), run.device) for _ in itertools.count())
    examples_per_step = config.train.grad_accum * config.train.batch_size  # on this rank

    with contextlib.ExitStack() as cleanup:
        logger = cleanup.enter_context(
            TrainLogger(
                run.out, total_steps=run.total_steps, log_every=config.train.log_every, is_main=run.is_main,
                start_step=state.step, peak_flops=run.peak_flops, device=run.device,
            )
        )  # fmt: skip
        watchdog = Watchdog(config.train.rank_timeout_s, run.rank).start()
        cleanup.callback(watchdog.stop)
        cleanup.enter_context(collective_failures_explained(run.rank, run.world, config.train.rank_timeout_s))

        while state.step < run.total_steps:
            started = time.perf_counter()
            hooks.hang_if_chosen(run.rank, state.step)
            layers = run.layers_at(state.step)
            result = run_step(
                config, run.trainees, micro_batches, layers,
                device=run.device, scaler=run.scaler, poison=hooks.poison(run.rank, state.step), speed=run.speed,
            )  # fmt: skip
            state.step += 1
            state.examples_seen += examples_per_step * run.world
            state.data = run.stream.state_dict()

            logger.log_step(
                state.step,
                losses=result.losses,  # a non-finite term is logged as "nan" / "inf": which one it was shows
                seconds=time.perf_counter() - started,
                examples=examples_per_step,
                tokens=result.tokens,
                learning_rates=result.learning_rates,
                layer_pairs=layers if run.schedule is not None else None,
                layer_weights=result.layer_weights,
                step_flops=result.flops,
                extra={"grad_norm": result.grad_norms, "world_size": run.world, "epoch": run.stream.epoch}
                | ({"recompiles": run.compiler.count} if run.compiler is not None else {}),
            )
            record_nonfinite(state, result, config.train.max_nonfinite_in_row, logger.log_event)  # may stop the run
            if dev is not None and state.step % config.train.eval_every == 0:
                with watchdog.paused():
                    logger.log_event("eval", state.step, **evaluate_on_dev(config, run.trainees, dev, run.world))
            if _save_due(config, state.step, run.total_steps):
                with watchdog.paused():
                    path = save_checkpoint(run, state, hooks)
                logger.log_event("checkpoint", state.step, path=str(path) if path else None)
            watchdog.beat()
            hooks.after_step()

        refuse_nonfinite_end(state)  # a run that ends in non-finite losses exports nothing (every rank alike)
        with watchdog.paused():  # every rank takes part in the export: ZeRO-3 gathers the weights
            exported = export_trained(run.trainees, run.out, is_main=run.is_main)
            run.accelerator.wait_for_everyone()
        logger.log_event("exported", state.step, **exported)
    run.accelerator.end_training()
    summary = {"steps": state.step, "world_size": run.world, "rank": run.rank, "exported": exported}
    return summary | {"nonfinite_total": state.nonfinite_total}


def _endless(stream: Any) -> Iterator[list[dict]]:
    """This rank's batches, epoch after epoch; the stream's cursor survives a resume mid-epoch."""
    while True:
        yield from stream
        stream.set_epoch(stream.epoch + 1)


def _save_due(config: Config, step: int, total_steps: int) -> bool:
    """A checkpoint every `train.save_every` steps and at the last step (never with save_every 0)."""
    every = config.train.save_every
    return bool(every) and (step % every == 0 or step == total_steps)
