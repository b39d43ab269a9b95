"""Run a `lead-dist` verb in this process, then print its peak memory on stderr (`PEAK_RSS_KIB <rank> <KiB>`).

    python -m benchmarks.harness.peak VERB [ARGS ...]            # e.g. prepare --format beir ...
    python -m benchmarks.harness.peak --baseline MODEL           # only the process group and the model loaded

Run from the repository root, alone or under torchrun (each rank prints its own line); `memory.peaks_from_stderr`
reads the lines back.
"""

from __future__ import annotations

import os
import sys

from benchmarks.harness.memory import PEAK_TAG, peak_rss_bytes


def main(argv: list[str]) -> int:
    if argv[:1] == ["--baseline"]:  # the fixed cost a verb's peak is compared with: imports, model, process group
        from lead_dist.distributed import barrier, init_from_env, leave
        from lead_dist.retrieval.text_encoder import load_text_encoder

        init_from_env()
        load_text_encoder(argv[1], "cpu")
        barrier()
        leave()  # as cli.main does after a verb: a group left to the exit can kill the rank (SIGABRT)
        status = 0
    else:
        from lead_dist.cli import main as cli_main

        status = cli_main(argv)
    print(PEAK_TAG, os.environ.get("RANK", "0"), peak_rss_bytes() // 1024, file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
