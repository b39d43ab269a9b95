"""Results: `benchmarks/results/<name>.json` (sorted keys, so reruns diff cleanly) and bar charts as PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def write_json(name: str, payload: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """`<results_dir>/<name>.json`, indented with sorted keys so that reruns diff cleanly."""
    return write_json_file(results_dir / f"{name}.json", payload)


def write_json_file(path: str | Path, payload: dict[str, Any]) -> Path:
    """`payload` at `path` (a script's `--out`), as `write_json` writes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


@dataclass
class BarPanel:
    """One panel of bars. `reference` draws a labelled horizontal line (e.g. a ceiling); `errors` are (low, high)
    per bar (e.g. min and max over repeats); `value_format` prints each value on its bar."""

    title: str
    ylabel: str
    labels: Sequence[str]
    values: Sequence[float]
    errors: Sequence[tuple[float, float]] | None = None
    reference: tuple[str, float] | None = None
    log_scale: bool = False
    value_format: str = "{:,.0f}"

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.values) or (self.errors is not None and len(self.errors) != len(self.values)):
            raise ValueError(f"BarPanel {self.title!r}: labels, values (and errors) must have the same length")


def _draw_panel(axes: Any, panel: BarPanel) -> None:
    positions = list(range(len(panel.labels)))
    yerr = None
    if panel.errors is not None:
        yerr = [
            [max(0.0, v - low) for v, (low, _high) in zip(panel.values, panel.errors, strict=True)],
            [max(0.0, high - v) for v, (_low, high) in zip(panel.values, panel.errors, strict=True)],
        ]
    bars = axes.bar(positions, panel.values, yerr=yerr, capsize=4, color="#4878a8")
    axes.bar_label(bars, labels=[panel.value_format.format(v) for v in panel.values], padding=3, fontsize=8)
    if panel.reference is not None:
        axes.axhline(panel.reference[1], color="#c44e52", linestyle="--", linewidth=1.2, label=panel.reference[0])
        axes.legend(loc="upper right", fontsize=8)
    axes.set_xticks(positions, panel.labels, rotation=25, ha="right", fontsize=8)
    axes.set_ylabel(panel.ylabel)
    if panel.log_scale:
        axes.set_yscale("log")
    axes.set_title(panel.title, fontsize=10)
    axes.margins(y=0.15)


def write_bar_chart(
    name: str, panels: Sequence[BarPanel], *, title: str = "", footnote: str = "", results_dir: Path = RESULTS_DIR
) -> Path:
    """`<results_dir>/<name>.png`: the panels side by side, each its own bar chart (one row of `write_bar_grid`,
    with wider bars)."""
    if not panels:
        raise ValueError("write_bar_chart: expected at least one panel")
    return write_bar_grid(
        name, [panels], title=title, footnote=footnote, results_dir=results_dir, row_height=5.0, bar_width=0.9, dpi=120
    )


def write_bar_grid(
    name: str,
    rows: Sequence[Sequence[BarPanel]],
    *,
    title: str = "",
    footnote: str = "",
    results_dir: Path = RESULTS_DIR,
    row_height: float = 4.2,
    bar_width: float = 0.45,
    dpi: int = 110,
) -> Path:
    """`<results_dir>/<name>.png`: panels in rows (a long row of bars would make one unreadably wide figure).

    Every row spans the figure's width; its panels share it in proportion to their bar counts."""
    if not rows or not all(rows):
        raise ValueError("write_bar_grid: expected at least one row, and at least one panel in every row")
    import matplotlib

    matplotlib.use("Agg")  # no display on the build machines
    import matplotlib.pyplot as plt

    row_widths = [[max(3.0, bar_width * len(p.labels) + 1.5) for p in row] for row in rows]
    figure = plt.figure(figsize=(max(sum(widths) for widths in row_widths), row_height * len(rows)))
    grid = figure.add_gridspec(len(rows), 1)
    for row_index, (row, widths) in enumerate(zip(rows, row_widths, strict=True)):
        sub = grid[row_index].subgridspec(1, len(row), width_ratios=widths)
        for column, panel in enumerate(row):
            _draw_panel(figure.add_subplot(sub[0, column]), panel)
    if title:
        figure.suptitle(title, fontsize=11)
    if footnote:
        figure.text(0.01, 0.005, footnote, fontsize=7, color="#555555", wrap=True)
    footnote_space = 0.3 / (row_height * len(rows)) if footnote else 0  # about 0.3 inch, whatever the height
    figure.tight_layout(rect=(0, footnote_space, 1, 0.98 if title else 1))
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.png"
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
