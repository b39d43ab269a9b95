"""A hub id whose weights a pip package ships resolves to that package's folder, with no hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from lead_dist.models.folder import packaged_copy, resolve_folder


def test_minilm_hub_id_resolves_to_the_packaged_copy(minilm_dir: str) -> None:
    assert resolve_folder("sentence-transformers/all-MiniLM-L6-v2") == Path(minilm_dir)


def test_unknown_hub_id_offline_names_both_readings() -> None:
    assert packaged_copy("someone/unknown-model") is None
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        resolve_folder("someone/unknown-model")
