"""Where lead_dist keeps what it fetches or assembles once and reuses: `$LEAD_DIST_CACHE`, else
`$XDG_CACHE_HOME/lead_dist`, else `~/.cache/lead_dist`. Subfolders: `models/` (packaged models assembled from their
parts, lead_dist/models/split_zip.py) and `beir/` (BEIR zips unpacked, lead_dist/data/beir_zip.py). Imports nothing,
so torch-free callers (prepare, split) can use it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("LEAD_DIST_CACHE"):
        return Path(os.environ["LEAD_DIST_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lead_dist"
