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
from typing import IO

from lead_dist.atomic import atomic_open
from lead_dist.data.errors import ShardError

CHECKSUM_FIELD = "_crc32"
_MEMBER_NAME = re.compile(r"^(\d{9})\.json$")


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


def read_shard(source: str | Path, expected_count: int | None = None) -> Iterator[dict]:
    """Yield the records of one shard in order; damaged, truncated or short shards raise ShardError.

    `source` is a local path or any URL webdataset's `gopen` opens (http(s) through curl, `pipe:COMMAND`, ...);
    the tar is read by webdataset's `tar_file_iterator`. Failures of the transport or of the tar stream (the
    connection dropped, a truncated file, fewer records than the manifest says) raise `ShardReadError`, which a
    caller may retry; a record that fails its checksum or a member that is not a record is a plain ShardError."""
    from webdataset.tariterators import tar_file_iterator  # here: importing webdataset imports torch

    where = f"shard {source}"
    count = 0
    stream = _open(source, where)
    finished = False
    try:
        for sample in tar_file_iterator(stream, skip_meta=None):
            member = f"{where}, member {sample['fname']!r}"
            if not _MEMBER_NAME.match(sample["fname"]):
                raise ShardError(f"{member}: unexpected member (expected regular files named <9 digits>.json)")
            yield decode_record(sample["data"], member)
            count += 1
        status = _close(stream)
        finished = True
    except ShardError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        status = _close(stream)
        problem = transport_failure(source, stream, error) if status else f"{type(error).__name__}: {error}"
        raise ShardReadError(f"{where}: unreadable after {count} records ({problem})", count, stream) from None
    finally:
        if not finished:
            _close(stream)
    if status:  # every record arrived, yet the download or command failed: its output cannot be trusted whole
        problem = transport_failure(source, stream)
        raise ShardReadError(f"{where}: the reader failed after {count} records: {problem}", count, stream)
    if expected_count is not None and count != expected_count:
        raise ShardReadError(
            f"{where}: holds {count} records but the manifest says {expected_count} (truncated or corrupt)",
            count,
            stream,
        )


class ShardReadError(ShardError):
    """The transport or the tar stream failed after `records` good records; `http_error` when the server refused
    the request (curl's exit status 22: 4xx, or 5xx after curl's own retries), which retrying does not change."""

    def __init__(self, message: str, records: int = 0, stream: object = None) -> None:
        super().__init__(message)
        self.records = records
        self.http_error = getattr(stream, "status", None) == CURL_HTTP_ERROR and "curl" in str(stream)


CURL_HTTP_ERROR = 22  # curl -f: the server answered with an HTTP error
CURL_FAILURES = {  # curl's exit statuses that a user meets, in words (webdataset opens http(s) URLs with curl)
    6: "the host name could not be resolved",
    7: "the connection was refused (no server listening there, or the host is unreachable)",
    18: "the transfer ended before the whole file arrived",
    22: "the server answered with an HTTP error (e.g. 404 Not Found)",
    28: "the connection timed out",
    35: "the TLS handshake failed",
    52: "the server sent nothing",
    56: "the connection was reset",
}


def transport_failure(source: str | Path, stream: object, error: BaseException | None = None) -> str:
    """Why reading `source` failed, in one line without the reader's argv (webdataset's message repeats curl's
    whole command line): curl's exit status in words for a URL, the exit status for a `pipe:` command."""
    status = getattr(stream, "status", None)
    if status:
        if "curl" in str(getattr(stream, "args", "")) or str(source).startswith(("http://", "https://")):
            return f"{CURL_FAILURES.get(status, 'the download failed')} (curl exit status {status})"
        return f"the command exited with status {status}"
    if error is None:
        return "the reader failed"
    text = str(error)
    return text if "([" not in text else type(error).__name__  # never webdataset's repr of the command


def _open(source: str | Path, where: str) -> IO[bytes]:
    from webdataset.gopen import gopen, set_options

    try:
        stream = gopen(str(source), "rb")
    except FileNotFoundError:
        raise ShardError(f"{where}: file not found") from None
    except (OSError, ValueError) as error:
        raise ShardReadError(f"{where}: cannot be opened ({transport_failure(source, None, error)})") from None
    # webdataset's Pipe raises at the first read after its process has exited with a failure, throwing away what
    # the pipe still holds: a consumer slower than the download then loses the records that arrived before a
    # dropped connection. We read to the end of what arrived and judge the exit status when closing instead.
    set_options(stream, ignore_errors=True)
    return stream


def _close(stream: IO[bytes]) -> int | None:
    """Close the stream and reap its reading process; the exit status of a download or command (curl's 18: the
    connection dropped mid-file; 22: an HTTP error such as 404), None for a local file."""
    stream.close()
    return getattr(stream, "status", None)
