"""The chart of `python -m benchmarks.data`: SciFact's pipeline against the tokenizer ceiling, and the at-scale runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.results import BarPanel, write_bar_grid


def chart(results: dict[str, Any], name: str, results_dir: Path | None) -> Path:
    """Left: examples/s of every step. Right: the tokenizing steps as a share of the raw tokenizer ceiling."""
    collated = [("usual padded\ntokenizer call", results["tokenizer_standard_call"])]
    collated.append(("collate_for only\n(in process)", results["collate_only"]))
    collated += [(f"stream + collate\n{key}", entry) for key, entry in results["stream_collated"].items()]
    absolute = [("prepare\n(+corpus shards)", results["prepare"]), ("stream\nno collation", results["stream_raw"])]
    absolute += [("raw tokenizer\n(ceiling)", results["tokenizer_ceiling"])] + collated
    ceiling = results["tokenizer_ceiling"]["median_per_second"]
    rates = BarPanel(
        title="training examples / s (median, whiskers min-max)",
        ylabel="examples / s",
        labels=[label for label, _entry in absolute],
        values=[entry["median_per_second"] for _label, entry in absolute],
        errors=[(entry["min_per_second"], entry["max_per_second"]) for _label, entry in absolute],
        reference=(f"raw tokenizer ceiling ({ceiling:,.0f}/s)", ceiling),
    )
    shares = BarPanel(
        title="share of the raw tokenizer ceiling (all workers together; median of rounds)",
        ylabel="rate / ceiling",
        labels=[label for label, _entry in collated],
        values=[entry["ratio_to_reference_median_of_rounds"] for _label, entry in collated],
        errors=[
            (min(entry["ratio_to_reference_per_round"]), max(entry["ratio_to_reference_per_round"]))
            for _label, entry in collated
        ],
        reference=("ceiling = 1", 1.0),
        value_format="{:.2f}",
    )
    host, settings = results["machine"], results["settings"]
    footnote = (
        f"{host['cpu_model']}, {host['usable_cores']} cores, SHARED: load average {host['load_average_1_5_15']} at "
        f"start, {results['load_average_at_end']} at end; SciFact train ({results['prepare']['num_queries']} "
        f"queries, no negatives), all-MiniLM-L6-v2 tokenizer, batch {settings['batch_size']}, "
        f"query/passage caps {settings['query_max_length']}/{settings['passage_max_length']} tokens; "
        f"{host['date_utc']}"
    )
    return write_bar_grid(
        name,
        [[rates, shares], at_scale_panels(results)],
        title="lead_dist data pipeline: SciFact (top), synthetic corpora at scale (bottom)",
        footnote=footnote,
        **({"results_dir": results_dir} if results_dir else {}),
    )


def at_scale_panels(results: dict[str, Any]) -> list[BarPanel]:
    """Peak RSS and passages/s of prepare per corpus size; examples/s streamed from disk and from HTTP, per wall
    second and per CPU second (the latter is the least disturbed by a busy machine)."""
    url = results["url_streaming"]
    local, http = url["local folder"], url["http://127.0.0.1"]
    panels = [
        BarPanel(
            title=f"disk vs HTTP (wall ratio {results['http_over_local']:.2f}, "
            f"per CPU s {http.get('ratio_to_reference_per_cpu_second')})",
            ylabel="examples / s (median)",
            labels=["disk, wall", "HTTP, wall", "disk, per\nCPU second", "HTTP, per\nCPU second"],
            values=[
                local["median_per_second"],
                http["median_per_second"],
                local["median_per_cpu_second"],
                http["median_per_cpu_second"],
            ],  # fmt: skip
        )
    ]
    scaling = results.get("prepare_scaling")
    if scaling:
        labels = [f"{run['passages']:,}\npassages" for run in scaling["runs"]]
        panels.insert(0, BarPanel(
            title="prepare peak RSS", ylabel="MiB", labels=labels,
            values=[run["peak_rss_mib"] for run in scaling["runs"]],
        ))  # fmt: skip
        panels.insert(1, BarPanel(
            title="prepare speed", ylabel="passages / s (wall)", labels=labels,
            values=[run["passages_per_second"] for run in scaling["runs"]],
        ))  # fmt: skip
    return panels
