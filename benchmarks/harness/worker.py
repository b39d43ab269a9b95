"""One rank of a benchmark training run: `lead-dist train`'s loop, then this rank's peak memory.

Launched by `benchmarks.harness.launch.run_training` under torchrun, from the repository root:

    torchrun --nproc_per_node N -m benchmarks.harness.worker CONFIG RESULT_PREFIX [key=value ...]

Runs `lead_dist.train.loop.train` on the config (with the overrides) exactly as `lead-dist train` does, then writes
`RESULT_PREFIX.rank<R>.json`: the world size the loop reports, this rank's peak RSS (`memory.peak_rss_bytes`, the
whole process life: model build, engines, steps and the final export) and the engines that ran. The main rank's step
times are in the run's own `log.jsonl`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.harness.memory import peak_rss_bytes


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m benchmarks.harness.worker CONFIG RESULT_PREFIX [key=value ...]", file=sys.stderr)
        return 2
    from lead_dist.config import load_config
    from lead_dist.train.loop import train
    from lead_dist.train.setup import RUN_FILE

    config_path, prefix, overrides = argv[0], argv[1], argv[2:]
    config = load_config(config_path, overrides)
    summary = train(config)
    run_record = json.loads((Path(config.output_dir) / RUN_FILE).read_text()) if summary["rank"] == 0 else {}
    result = {
        "rank": summary["rank"],
        "world_size": summary["world_size"],
        "steps": summary["steps"],
        "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3),
        "engines": run_record.get("engines"),
    }
    Path(f"{prefix}.rank{summary['rank']}.json").write_text(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
