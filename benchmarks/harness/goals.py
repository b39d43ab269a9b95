"""Goals: whether measured values meet a threshold, stated the same way in every results JSON."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

_OPS = {">=": operator.ge, "<=": operator.le}


def goal(
    values: dict[str, Any],
    op: str,
    threshold: float,
    *,
    measure: Callable[[Any], float] = float,
    worst_first: bool = True,
) -> dict[str, Any]:
    """{"threshold": "<op> <threshold>", "met", "met_by", "missed"} over the keyed values (`measure` picks the
    number out of a value); the misses worst first, or in key order."""
    passes = {key: _OPS[op](measure(value), threshold) for key, value in values.items()}
    failed = [key for key, ok in passes.items() if not ok]
    missed = sorted(failed, key=lambda key: measure(values[key]), reverse=op == "<=") if worst_first else sorted(failed)
    met_by = sorted(key for key, ok in passes.items() if ok)
    return {"threshold": f"{op} {threshold}", "met": not missed, "met_by": met_by, "missed": missed}


def value_goal(value: float, op: str, threshold: float, **extra: Any) -> dict[str, Any]:
    """{"value", "met"} of one number (plus `extra` keys, e.g. whether the run was meant to count)."""
    return {"value": value, "met": _OPS[op](value, threshold), **extra}
