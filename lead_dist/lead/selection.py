"""Which student layers are aligned with which teacher layers (LEAD_SPEC section 5).

Every strategy returns two sorted tuples of equal length, paired by rank: student_layers[i] is aligned with
teacher_layers[i]. Layer indices follow docs/INTERFACES.md (0 = output of the first transformer block).

The `random` draw is a pure function of (seed, step // resample_every): it uses its own numpy Generator seeded
from those two integers and never touches a global RNG, so every rank draws the same layers without any
communication, and a resumed run draws exactly what the interrupted run would have drawn. A checkpoint therefore
needs to store only the optimizer step; `LayerSchedule` has no state of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lead_dist.config.schema import STRATEGIES  # the one list, also what config validation checks

LayerPairs = tuple[tuple[int, ...], tuple[int, ...]]


def _check_int(name: str, value: object, minimum: int) -> int:
    # bool is an int subclass; a YAML `true` reaching here is a config mistake, not a layer count.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"layer selection option {name!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"layer selection option {name!r} must be >= {minimum}, got {value}")
    return int(value)


def _check_k(k: int, student_depth: int, teacher_depth: int) -> None:
    for model, depth in (("student", student_depth), ("teacher", teacher_depth)):
        if k > depth:
            raise ValueError(
                f"layer selection option 'k' = {k} exceeds the {model}'s depth ({depth} layers); "
                f"choose k <= min(student depth, teacher depth) = {min(student_depth, teacher_depth)}"
            )


def _random_draw(depth_s: int, depth_t: int, k: int, seed: int, window: int) -> LayerPairs:
    # SeedSequence mixes both integers into the state, so (seed, window) pairs never collide the way
    # seed + window would (seed 1 window 0 vs seed 0 window 1).
    rng = np.random.default_rng([seed, window])
    student = sorted(int(i) for i in rng.choice(depth_s, size=k, replace=False))
    teacher = sorted(int(i) for i in rng.choice(depth_t, size=k, replace=False))
    return tuple(student), tuple(teacher)


def _last(depth: int, k: int) -> tuple[int, ...]:
    return tuple(range(depth - k, depth))


def _skip(depth: int, k: int) -> tuple[int, ...]:
    # Layer i of K ends block floor((i+1) * depth / K) - 1: evenly spaced, the last one is depth - 1, and
    # consecutive picks differ by at least floor(depth / K) >= 1, so they are distinct. Integer maths, no rounding.
    return tuple((i + 1) * depth // k - 1 for i in range(k))


def _fixed(pairs: Sequence[Sequence[int]], k: int, depth_s: int, depth_t: int) -> LayerPairs:
    checked: list[tuple[int, int]] = []
    for index, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise ValueError(f"layer selection option 'fixed'[{index}] must be a (student, teacher) pair, got {pair!r}")
        s = _check_int(f"fixed[{index}][0] (student layer)", pair[0], 0)
        t = _check_int(f"fixed[{index}][1] (teacher layer)", pair[1], 0)
        if s >= depth_s:
            raise ValueError(f"layer selection option 'fixed'[{index}]: student layer {s} >= student depth {depth_s}")
        if t >= depth_t:
            raise ValueError(f"layer selection option 'fixed'[{index}]: teacher layer {t} >= teacher depth {depth_t}")
        checked.append((s, t))
    if len(checked) != k:
        raise ValueError(f"layer selection option 'k' = {k} but 'fixed' lists {len(checked)} pairs; they must agree")
    checked.sort()
    student = tuple(s for s, _ in checked)
    teacher = tuple(t for _, t in checked)
    # Pairs are matched by rank of the sorted tuples, so a list whose teacher side is not increasing along the
    # student side (e.g. (0, 5), (1, 2)) cannot be represented; refuse it instead of silently re-pairing.
    for side, layers in (("student", student), ("teacher", teacher)):
        if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
            raise ValueError(
                f"layer selection option 'fixed' = {list(pairs)!r}: {side} layers must be distinct and increase "
                "together with the other side (pairs are matched by rank)"
            )
    return student, teacher


def select_layers(
    strategy: str,
    student_depth: int,
    teacher_depth: int,
    k: int,
    seed: int,
    step: int,
    resample_every: int = 10,
    fixed: Sequence[Sequence[int]] | None = None,
) -> LayerPairs:
    """The (student_layers, teacher_layers) aligned at optimizer step `step`, sorted, paired by rank.

    `random`: K distinct layers of each model, uniform, redrawn every `resample_every` steps from (seed, window).
    `last`: the last K layers of each. `skip`: K evenly spaced layers ending at the last one (K = depth/2 of a
    12-layer model gives 1, 3, .., 11). `fixed`: the K (student, teacher) pairs given in `fixed`.
    K = 0 gives two empty tuples (response-based distillation).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"layer selection option 'strategy' must be one of {STRATEGIES}, got {strategy!r}")
    student_depth = _check_int("student_depth", student_depth, 1)
    teacher_depth = _check_int("teacher_depth", teacher_depth, 1)
    k = _check_int("k", k, 0)
    seed = _check_int("seed", seed, 0)
    step = _check_int("step", step, 0)
    resample_every = _check_int("resample_every", resample_every, 1)
    _check_k(k, student_depth, teacher_depth)
    if strategy != "fixed" and fixed is not None:
        raise ValueError(f"layer selection option 'fixed' is only used with strategy 'fixed', not {strategy!r}")
    if strategy == "fixed":
        if fixed is None:
            raise ValueError(
                "layer selection strategy 'fixed' needs option 'fixed': a list of (student, teacher) pairs"
            )
        return _fixed(fixed, k, student_depth, teacher_depth)
    if k == 0:
        return (), ()
    if strategy == "random":
        return _random_draw(student_depth, teacher_depth, k, seed, step // resample_every)
    if strategy == "last":
        return _last(student_depth, k), _last(teacher_depth, k)
    return _skip(student_depth, k), _skip(teacher_depth, k)


@dataclass(frozen=True)
class LayerSchedule:
    """The layer selection options of a run, validated once; `at(step)` gives the pairs for a step.

    Stateless by design: the pairs are derived from (seed, step), so a checkpoint stores only the step.
    """

    strategy: str
    student_depth: int
    teacher_depth: int
    k: int
    seed: int
    resample_every: int = 10
    fixed: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        self.at(0)  # raises the same clear errors as select_layers, at construction time

    def at(self, step: int) -> LayerPairs:
        return select_layers(
            self.strategy,
            self.student_depth,
            self.teacher_depth,
            self.k,
            self.seed,
            step,
            resample_every=self.resample_every,
            fixed=self.fixed,
        )
