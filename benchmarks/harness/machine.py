"""The machine record every results JSON carries: a number without its machine compares with nothing.

`machine()` gives the CPU model, the cores this process may use, memory, load average (the build machines are
shared), Python, torch and its threads, the git commit and the UTC date; `log` writes progress to stderr.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def git(*arguments: str) -> str:
    """The output of a read-only git command in the repository (raises where git fails)."""
    command = ["git", *arguments]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10).stdout


def git_commit() -> dict[str, Any]:
    """HEAD and whether the working tree differs from it."""
    try:
        head, status = git("rev-parse", "HEAD").strip(), git("status", "--porcelain", "--untracked-files=no")
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
