"""Counting what prepare leaves out: every dropped record is listed with its reason, and the share dropped per
kind of input is checked against `--max-drop-share` so that a badly joined dataset fails instead of shrinking."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lead_dist.data.errors import DropShareExceeded

# The kinds of input whose drops are counted; each has a total so a share can be computed.
KINDS = ("passages", "queries", "judgements", "negatives", "examples")


@dataclass
class DropLog:
    totals: Counter = field(default_factory=Counter)
    drops: list[dict] = field(default_factory=list)

    def seen(self, kind: str, count: int = 1) -> None:
        self.totals[kind] += count

    def drop(self, kind: str, item_id: str, reason: str, source: str, line: int, **extra: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown drop kind {kind!r}; expected one of {KINDS}")
        self.drops.append({"kind": kind, "id": item_id, "reason": reason, "source": source, "line": line, **extra})

    def counts(self) -> dict[str, dict[str, int]]:
        """{kind: {reason: count}} over every drop."""
        result: dict[str, dict[str, int]] = {}
        for record in self.drops:
            reasons = result.setdefault(record["kind"], {})
            reasons[record["reason"]] = reasons.get(record["reason"], 0) + 1
        return result

    def shares(self) -> dict[str, float]:
        dropped = Counter(record["kind"] for record in self.drops)
        return {kind: dropped[kind] / self.totals[kind] for kind in KINDS if self.totals[kind]}

    def check(self, max_share: float) -> None:
        """Raise when the dropped share of any kind of input exceeds `max_share`, naming the kind and reasons."""
        over = {kind: share for kind, share in self.shares().items() if share > max_share}
        if over:
            counts = self.counts()
            parts = [
                f"{kind}: {share:.2%} dropped ({', '.join(f'{n} {reason}' for reason, n in counts[kind].items())})"
                for kind, share in over.items()
            ]
            raise DropShareExceeded(
                f"more than --max-drop-share={max_share} of the input was dropped: {'; '.join(parts)}. "
                "Fix the inputs or raise --max-drop-share; the first drops are listed with file and line: "
                + "; ".join(
                    f"{d['source']}:{d['line']} {d['kind']} {d['id']!r} ({d['reason']})" for d in self.drops[:5]
                )
            )
