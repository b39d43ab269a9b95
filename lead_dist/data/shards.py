"""Deterministic webdataset tar shards: writing and verified reading.

A shard is a plain tar of members `<9-digit key>.json`, one record each, so `webdataset.WebDataset` reads it as
samples {"__key__": key, "json": bytes}. Every tar header is fixed (mtime 0, uid/gid 0, empty owner names, mode
0644, USTAR), members are written in key order, and the JSON is canonical (sorted keys, no spaces), so the same
records give byte-identical shards.

Each record carries "_crc32", a checksum of its own canonical JSON without that field: a flipped byte inside a
record is caught on the record itself, not only at the end of the shard. tarfile ends silently at a damaged
header, so the reader also checks the record count against the manifest. Either way a damaged shard is a
`ShardError` naming the shard, never wrong records.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from lead_dist.atomic import atomic_open
from lead_dist.data.errors import ShardError

CHECKSUM_FIELD = "_crc32"
_MEMBER_NAME = re.compile(r"^(\d{9})\.json$")
_MAX_MEMBER_BYTES = 256 * 1024 * 1024  # a header claiming more is damaged, not a record


def _canonical(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def encode_record(record: dict) -> bytes:
    if CHECKSUM_FIELD in record:
        raise ValueError(f"a record may not carry the reserved field {CHECKSUM_FIELD!r}")
    checksum = zlib.crc32(_canonical(record))
    return _canonical({**record, CHECKSUM_FIELD: checksum})


def decode_record(data: bytes, where: str) -> dict:
    """Parse one member and verify its checksum; any damage is a ShardError naming `where`."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ShardError(f"{where}: corrupt record (not UTF-8 JSON: {error})") from None
    if not isinstance(record, dict) or not isinstance(record.get(CHECKSUM_FIELD), int):
        raise ShardError(f"{where}: corrupt record (expected a JSON object with {CHECKSUM_FIELD!r})")
    checksum = record.pop(CHECKSUM_FIELD)
    if zlib.crc32(_canonical(record)) != checksum:
        raise ShardError(f"{where}: corrupt record (checksum mismatch)")
    return record


def write_shard(path: str | Path, records: Iterable[dict], first_key: int = 0) -> int:
    """Write `records` as one shard (atomically, via a temporary file); returns the number written."""
    path = Path(path)
    count = 0
    with atomic_open(path, "wb") as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for count, record in enumerate(records, start=1):
            data = encode_record(record)
            info = tarfile.TarInfo(f"{first_key + count - 1:09d}.json")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return count


def read_shard(path: str | Path, expected_count: int | None = None) -> Iterator[dict]:
    """Yield the records of one shard in order; damaged, truncated or short shards raise ShardError."""
    path = Path(path)
    count = 0
    try:
        with path.open("rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                where = f"shard {path}, member {member.name!r}"
                if not member.isfile() or not _MEMBER_NAME.match(member.name):
                    raise ShardError(f"{where}: unexpected member (expected regular files named <9 digits>.json)")
                if member.size > _MAX_MEMBER_BYTES:
                    raise ShardError(f"{where}: member claims {member.size} bytes (corrupt header)")
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                if len(data) != member.size:
                    raise ShardError(f"{where}: truncated ({len(data)} of {member.size} bytes)")
                yield decode_record(data, where)
                count += 1
    except ShardError:
        raise
    except FileNotFoundError:
        raise ShardError(f"shard {path}: file not found") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise ShardError(f"shard {path}: unreadable after {count} records ({type(error).__name__}: {error})") from None
    if expected_count is not None and count != expected_count:
        raise ShardError(
            f"shard {path}: holds {count} records but the manifest says {expected_count} (truncated or corrupt)"
        )
