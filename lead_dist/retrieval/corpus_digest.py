"""What an embeddings folder was encoded from: the corpus's content, not its path.

`corpus_digest(path)` is the sha256 over the bytes of every file the corpus is read from (BEIR corpus.jsonl, MS MARCO
collection.tsv, or a prepared folder's manifest and corpus shards), each file's name and size included. It is stored
in the embeddings manifest when the folder is started and compared on every reuse, so texts changed in place (same
path, even the same size) never pass for the corpus the vectors came from. Hashing reads the corpus once more
(about 1 s per GB on one core), which is small next to encoding it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lead_dist.retrieval.sources import corpus_file


def corpus_files(path: str | Path) -> list[Path]:
    """The files whose bytes make up the corpus at `path` (a prepared folder: its manifest and corpus shards)."""
    file = corpus_file(Path(path))
    if file.name != "manifest.json":
        return [file]
    shards = json.loads(file.read_text(encoding="utf-8"))["shards"]["corpus"]
    return [file, *(file.parent / entry["name"] for entry in shards)]


def corpus_digest(path: str | Path) -> str:
    """sha256 hex of the corpus's files (names, sizes, bytes), in reading order."""
    digest = hashlib.sha256()
    for file in corpus_files(path):
        digest.update(f"{file.name}:{file.stat().st_size}\n".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
