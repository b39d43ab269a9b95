"""JSON + PNG of the speed-switch benchmark (benchmarks/throughput/speed.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.results import BarPanel, write_bar_grid, write_json

GOAL = ("contrastive_vs_st", 1.2)


def goal_block(settings: dict[str, Any]) -> dict[str, Any]:
    """contrastive_vs_st >= 1.2 per setting, at the CPU default chunk size and at the best one measured (each a
    {"wall", "cpu"} pair of ratios; met when both are)."""
    from lead_dist.train.speed import DEFAULT_CHUNK_SIZE

    default = f"chunk_{DEFAULT_CHUNK_SIZE['cpu']}"
    values = {}
    for name, setting in settings.items():
        ratios = setting["contrastive_vs_st"]
        values[name] = {
            "one_padded_batch": ratios.get("chunk_0"),
            "default": ratios.get(default, ratios.get("chunk_0")),
            "best": max(ratios.values(), key=lambda r: min(r.values())),
        }
    met = all(min(v["default"].values()) >= GOAL[1] for v in values.values())
    return {"contrastive_vs_st": {"threshold": f">= {GOAL[1]}", "values": values, "met_at_default": met}}


def _panels(payload: dict[str, Any]) -> list[BarPanel]:
    panels = []
    for name, setting in payload["settings"].items():
        cells = setting["cells"]
        labels = list(cells)
        panels.append(
            BarPanel(
                f"{name}: step time (median of rounds)",
                "seconds per step",
                labels,
                [cells[c]["step_s_median"] for c in labels],
                errors=[(min(cells[c]["step_s"]), max(cells[c]["step_s"])) for c in labels],
                value_format="{:.2f}",
            )
        )
    padding = payload["padding_share"]
    for data in padding:
        shares = padding[data]["passages"]
        panels.append(
            BarPanel(
                f"padding share of passages: {data}",
                "share",
                list(shares),
                list(shares.values()),
                value_format="{:.2f}",
            )
        )
    return panels


def write_speed_outputs(name: str, payload: dict[str, Any]) -> tuple[Path, Path]:
    payload = payload | {"goals": goal_block(payload["settings"])}
    json_path = write_json(name, payload)
    footnote = (
        f"{payload['machine'].get('cpu_model', '')}; shared machine, load average per round in the JSON; "
        f"{payload['threads']} thread(s)"
    )
    png_path = write_bar_grid(
        name, [_panels(payload)[:2], _panels(payload)[2:]], title="train.speed switches on CPU", footnote=footnote
    )
    return json_path, png_path
