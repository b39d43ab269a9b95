"""A BEIR dataset given as one zip, the way BEIR publishes them: a local path or an http(s) URL, unpacked once into a
cache folder that `prepare --format beir --input` and `split --data` then read as any BEIR folder.

    lead-dist split --data https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip \\
        --sha256 SHA256 --split train --dev-queries configs/scifact/dev_queries.txt --out runs/scifact-split

- **Where**: `$LEAD_DIST_CACHE/beir/<sha256 of the zip>/`, `$LEAD_DIST_CACHE` defaulting to
  `$XDG_CACHE_HOME/lead_dist` (else `~/.cache/lead_dist`). The folder holds the zip's files as unpacked and
  `unpacked.json` (the zip's source and sha256, and every file's size and sha256).
- **Downloads** go through webdataset's `gopen` (curl for http(s), with curl's own retries), the opener of the
  training shards; a failed transfer is one line with the URL and curl's reason (`shards.transport_failure`).
- **Checksums**: with `--sha256` the zip must have that sha256 (a mismatch is refused, naming both); without it,
  the sha256 of what arrived is printed so it can be given next time.
- **Reuse**: the cached folder is used again only when its content is what was unpacked (every file's size and
  sha256 are checked against `unpacked.json`) for a zip of the same sha256. A URL with `--sha256` is then not
  downloaded at all; a URL without it is downloaded again (its content may have changed) and the cache reused if
  the sha256 matches; a local zip is hashed and looked up. A damaged or partial cache folder is unpacked again.
- **Safety**: a member whose path would leave the folder (absolute, `..`) or a link is refused; the BEIR folder is
  the zip's top level if it holds corpus.jsonl, else its one top-level folder that does.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

from lead_dist.atomic import atomic_write_text
from lead_dist.cache import cache_root
from lead_dist.data.errors import DataFormatError, ShardError
from lead_dist.data.manifest import file_sha256

RECORD = "unpacked.json"
CHUNK = 1 << 20


def is_beir_zip(text: str | os.PathLike | None) -> bool:
    """A URL, or a local path ending in .zip (a folder is read as it is)."""
    return text is not None and (str(text).startswith(("http://", "https://")) or str(text).endswith(".zip"))


def _check_hex(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    return value


def _download(url: str, target: Path) -> str:
    """Stream `url` into `target` through webdataset's opener; returns the sha256 of what arrived."""
    from webdataset.gopen import gopen, set_options

    from lead_dist.data.shards import transport_failure

    digest = hashlib.sha256()
    stream = None
    try:
        stream = gopen(url, "rb")
        set_options(stream, ignore_errors=True)  # judge the exit status at the end, not at the first read
        with open(target, "wb") as sink:
            for block in iter(lambda: stream.read(CHUNK), b""):
                digest.update(block)
                sink.write(block)
        stream.close()
        if getattr(stream, "status", None):
            raise OSError("reader failed")
    except OSError as error:
        target.unlink(missing_ok=True)
        raise ShardError(f"{url}: cannot be downloaded: {transport_failure(url, stream, error)}") from None
    return digest.hexdigest()


def _verified(folder: Path, sha256: str) -> bool:
    """The cached folder holds exactly what was unpacked from the zip with `sha256`."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if record.get("sha256") != sha256:
        return False
    for name, (size, digest) in record.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size or file_sha256(path) != digest:
            return False
    return True


def _unpack(zip_path: Path, source: str, sha256: str, final: Path) -> None:
    """Unpack into a fresh folder beside `final`, record what was written, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.unpacking-{secrets.token_hex(4)}"
    staging.mkdir()
    files: dict[str, list] = {}
    try:
        try:
            archive = zipfile.ZipFile(zip_path)
        except zipfile.BadZipFile as error:
            raise DataFormatError(f"{source}: not a zip file ({error})") from None
        with archive:
            for member in archive.infolist():
                name = PurePosixPath(member.filename)
                if name.is_absolute() or ".." in name.parts or (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DataFormatError(f"{source}: member {member.filename!r} would be written outside the folder")
                if member.is_dir():
                    continue
                target = staging / "files" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with archive.open(member) as data, open(target, "wb") as sink:
                    for block in iter(lambda data=data: data.read(CHUNK), b""):
                        digest.update(block)
                        sink.write(block)
                files[str(PurePosixPath("files") / name)] = [target.stat().st_size, digest.hexdigest()]
        atomic_write_text(staging / RECORD, json.dumps({"source": source, "sha256": sha256, "files": files}, indent=1))
        if final.exists():
            shutil.rmtree(final)  # damaged or partial (not verified): replaced
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _beir_folder(folder: Path, source: str) -> Path:
    files = folder / "files"
    if (files / "corpus.jsonl").is_file():
        return files
    tops = [p for p in files.iterdir() if p.is_dir()] if files.is_dir() else []
    found = [p for p in tops if (p / "corpus.jsonl").is_file()]
    if len(found) != 1:
        raise DataFormatError(
            f"{source}: expected a BEIR zip (corpus.jsonl, queries.jsonl, qrels/ at its top level or in its one "
            f"top-level folder), found {', '.join(sorted(p.name for p in files.iterdir())[:5]) or 'nothing'}"
        )
    return found[0]


def beir_from_zip(source: str | os.PathLike, sha256: str | None = None, *, log=None) -> Path:
    """The BEIR folder of the zip at `source` (a local path or an http(s) URL), unpacked into the cache (or found
    there, verified). `sha256`: the zip's expected checksum (refused when it differs)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    text, expected = str(source), _check_hex(sha256)
    root = cache_root() / "beir"
    if expected and _verified(root / expected, expected):
        log(f"lead-dist: {text}: using the unpacked copy in {root / expected} (sha256 {expected[:16]}..., checked)")
        return _beir_folder(root / expected, text)
    downloaded = None
    if text.startswith(("http://", "https://")):
        root.mkdir(parents=True, exist_ok=True)
        downloaded = root / f".download-{secrets.token_hex(4)}.zip"
        log(f"lead-dist: downloading {text}")
        actual, zip_path = _download(text, downloaded), downloaded
    else:
        zip_path = Path(text).expanduser()
        if not zip_path.is_file():
            raise DataFormatError(f"{text}: not found (expected a BEIR zip file, a folder, or an http(s) URL)")
        actual = file_sha256(zip_path)
    try:
        if expected and actual != expected:
            raise DataFormatError(f"{text}: sha256 is {actual}, but --sha256 says {expected}: not the zip expected")
        if not expected:
            log(f"lead-dist: {text}: sha256 {actual} (pass --sha256 {actual} to check it, and to skip the download)")
        final = root / actual
        if _verified(final, actual):
            log(f"lead-dist: {text}: using the unpacked copy in {final} (checked)")
        else:
            _unpack(zip_path, text, actual, final)
            log(f"lead-dist: {text}: unpacked into {final}")
    finally:
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)
    return _beir_folder(final, text)
