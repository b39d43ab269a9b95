"""Pieces every benchmark script shares: what machine a number came from, timing, and writing results.

A number without its machine is not comparable to anything, so every results JSON carries `machine()`: CPU model,
cores this process may use, memory, load average (the build machines are shared), Python, torch and its thread
count, the git commit, and the UTC date. Results are written as `benchmarks/results/<name>.json` (+ `<name>.png`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """Progress on stderr (stdout stays free for whatever a script prints as its result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux); platform.processor() elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (a container or taskset may allow fewer than os.cpu_count())."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text(encoding="utf-8").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)  # the value is in KiB
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages; above the core count, other processes are taking CPU from ours."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(value, 2) for value in os.getloadavg()]


def package_versions(*names: str) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> dict[str, Any]:
    """HEAD and whether the working tree differs from it (read-only git commands)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(status.strip())}


def machine() -> dict[str, Any]:
    """Everything a reader needs to judge whether a number from this run compares with theirs."""
    description: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": memory_gib(),
        "load_average_1_5_15": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": git_commit(),
        "env": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")},
    }
    try:  # torch is optional here so that this module stays usable by scripts that do not need it
        import torch

        description["torch"] = torch.__version__
        description["torch_threads"] = torch.get_num_threads()
        description["torch_interop_threads"] = torch.get_num_interop_threads()
        description["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        description["torch"] = None
    return description


def rate_summary(items: Sequence[int], seconds: Sequence[float]) -> dict[str, Any]:
    """Items per second of each repeat, and their median/min/max. The median is the headline: on a shared
    machine one repeat may lose the CPU to another process, which the spread then shows."""
    if len(items) != len(seconds) or not seconds:
        raise ValueError("rate_summary: expected one item count per timing, and at least one timing")
    rates = [n / s for n, s in zip(items, seconds, strict=True)]
    return {
        "items": list(items),
        "seconds": [round(s, 4) for s in seconds],
        "per_second": [significant(r) for r in rates],
        "median_per_second": significant(statistics.median(rates)),
        "min_per_second": significant(min(rates)),
        "max_per_second": significant(max(rates)),
    }


def significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant digits: rates of 2 items/s and of 20,000 keep the same relative precision
    (one decimal place made a ratio of two rates near 1-2/s move in steps of 5-10%)."""
    return float(f"{value:.{digits}g}")


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has reaped (e.g. DataLoader workers, once joined)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed_with_cpu(action: Callable[[], int]) -> tuple[int, float, float]:
    """(items the action reports, wall seconds, CPU share = CPU seconds / wall seconds). On a shared machine a
    single-threaded step with a CPU share well below 1 was waiting for a core, not working."""
    cpu, start = cpu_seconds(), time.perf_counter()
    items = action()
    wall = time.perf_counter() - start
    return items, wall, (cpu_seconds() - cpu) / wall


def run_summary(runs: Sequence[tuple[int, float, float]], load: list[float] | None) -> dict[str, Any]:
    """rate_summary of `timed_with_cpu` results, plus CPU shares and items per CPU second."""
    summary = rate_summary([n for n, _s, _c in runs], [s for _n, s, _c in runs])
    summary["cpu_share"] = [round(c, 2) for _n, _s, c in runs]
    # Items per CPU second: what the work costs, whatever share of a core the shared machine granted.
    per_cpu = [n / (s * c) for n, s, c in runs if c > 0]
    summary["per_cpu_second"] = [significant(r) for r in per_cpu]
    summary["median_per_cpu_second"] = significant(statistics.median(per_cpu)) if per_cpu else None
    summary["load_average_before"] = load
    return summary


def interleaved_rounds(
    actions: dict[str, Callable[[], int]], rounds: int, unit: str = "items"
) -> dict[str, dict[str, Any]]:
    """Every action once per round, in their order, for `rounds` rounds; each returns how many items it handled.
    The first action is the reference. Interleaving makes a change of load on a shared machine hit every action
    alike, so each round's ratio to the reference is fair; the median over rounds is the headline."""
    if rounds < 1 or not actions:
        raise ValueError(f"interleaved_rounds: expected rounds >= 1 and some actions, got {rounds}, {list(actions)}")
    runs: dict[str, list[tuple[int, float, float]]] = {name: [] for name in actions}
    loads: dict[str, list] = {name: [] for name in actions}
    for number in range(rounds):
        for name, action in actions.items():
            loads[name].append(load_average())
            runs[name].append(timed_with_cpu(action))
            items, seconds, share = runs[name][-1]
            log(f"round {number + 1}/{rounds} {name}: {items / seconds:,.0f} {unit}/s (cpu share {share:.2f})")
    results = {name: run_summary(runs[name], loads[name][0]) for name in actions}
    reference = results[next(iter(actions))]
    for name, result in results.items():
        result["load_average_per_round"] = loads[name]
        per_round = [rate / ref for rate, ref in zip(result["per_second"], reference["per_second"], strict=True)]
        result["ratio_to_reference_per_round"] = [round(r, 3) for r in per_round]
        result["ratio_to_reference_median_of_rounds"] = round(statistics.median(per_round), 3)
        if result["median_per_cpu_second"] and reference["median_per_cpu_second"]:
            cpu_ratio = result["median_per_cpu_second"] / reference["median_per_cpu_second"]
            result["ratio_to_reference_per_cpu_second"] = round(cpu_ratio, 3)
    return results


def write_json(name: str, payload: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """`<results_dir>/<name>.json`, indented with sorted keys so that reruns diff cleanly."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
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
