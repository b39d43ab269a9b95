"""The packaged-teacher stage of the quality protocol (issue 19: a deeper teacher of another family).

A packaged teacher (grid.yaml `packaged_teachers`, e.g. all-mpnet-base-v2 as published) is measured before it is
used: its dev nDCG@10 over the whole corpus and its per-layer cross entropies (the probe), zero-shot. It teaches as
published if that dev nDCG@10 is above the warmed student's on the same evaluation; otherwise it is warmed up on
SciFact train with its recipe first (and measured again). Then it is evaluated on test, probed against each student
start its runs use, and run once over the training shards into a per-layer cache (`lead-dist cache-teacher`), from
which every one of its runs reads it, frozen.
"""

from __future__ import annotations

from benchmarks.harness.machine import log
from benchmarks.quality.commands import (
    PROBE,
    Layout,
    cache_argv,
    evaluate_argv,
    packaged_teacher_folder,
    probe_argv,
    rel,
    warm_up,
    zero_shot_beats_student,
)
from benchmarks.quality.plan import Plan
from benchmarks.quality.steps import StepRunner


def packaged_teachers(runner: StepRunner, plan: Plan, layout: Layout) -> None:
    """Every packaged teacher of the plan, one after the other (each step with every core)."""
    if not plan.packaged_teachers:
        return
    # what a packaged teacher must beat: the warmed student on the whole-corpus dev evaluation
    runner.run("eval-student_warmup-dev", evaluate_argv(plan, rel(layout.student_start), layout.split, "dev",
               layout.evaluation("student_warmup", "dev"), layout.embeddings("student_warmup", "scifact")))  # fmt: skip
    for name in plan.packaged_teachers:
        one(runner, plan, layout, name)


def one(runner: StepRunner, plan: Plan, layout: Layout, name: str) -> None:
    packaged, zero_shot = plan.packaged_teachers[name], f"teacher_{name}_zeroshot"
    zero_shot_embeddings = layout.embeddings(zero_shot, "scifact")
    runner.run(f"eval-{zero_shot}-dev", evaluate_argv(plan, packaged.model, layout.split, "dev",
               layout.evaluation(zero_shot, "dev"), zero_shot_embeddings))  # fmt: skip
    runner.run(f"probe-step0-{name}_zeroshot", probe_argv(plan, layout, name, "student_warmup", packaged.model,
               layout.probe_of(f"{name}_zeroshot")), program=PROBE)  # fmt: skip
    beats = zero_shot_beats_student(layout, name)
    if beats is None:
        log(f"{name}: the zero-shot rule is decided after the dev evaluations (dry run: shown as used zero-shot)")
    else:
        log(f"{name}: zero-shot it {'beats' if beats else 'does NOT beat'} the warmed student on dev"
            f"{'' if beats else ': warmed up first'}")  # fmt: skip
    folder = packaged_teacher_folder(plan, layout, name)
    embeddings = zero_shot_embeddings  # the published model: its dev evaluation's corpus embeddings serve test too
    if beats is False:
        warm_up(runner, plan, layout, name, packaged.warmup, layout.teacher_dir(name), plan.warmup_overrides)
        embeddings = layout.embeddings(f"teacher_{name}", "scifact")
        runner.run(f"eval-teacher_{name}-dev", evaluate_argv(plan, folder, layout.split, "dev",
                   layout.evaluation(f"teacher_{name}", "dev"), embeddings))  # fmt: skip
    runner.run(f"eval-teacher_{name}-scifact", evaluate_argv(plan, folder, plan.test.data, plan.test.split,
               layout.evaluation(f"teacher_{name}", "scifact"), embeddings))  # fmt: skip
    starts = sorted({spec.student for spec in plan.runs if spec.teacher == name})
    for start in starts:
        if beats is False or start != "student_warmup":  # the zero-shot probe above is the published teacher's
            probe = f"{name}-{start}" if start != "student_warmup" else name
            runner.run(f"probe-step0-{probe}", probe_argv(plan, layout, name, start, folder, layout.probe_of(probe)),
                       program=PROBE)  # fmt: skip
    runner.run(f"cache-teacher-{name}", cache_argv(plan, layout, name, folder))
