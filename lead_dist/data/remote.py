"""Reading a prepared folder through a `ShardLocation`: the manifest, a pre-flight probe of the shards, and shard
records with retries.

Retries (URLs and commands only; a local file is read once): a shard whose transport fails mid-way (the
connection dropped, the command died, the stream ended early) is opened again from its start, up to `retries`
times, after `retry_backoff_s * 2**attempt` seconds; records already yielded are read again and skipped, so the
caller sees every record exactly once, in order. After the last retry the ShardError names the URL and the index
of the first record not delivered. An HTTP error (curl's exit 22: 404, 403, or a 5xx that curl's own retries,
webdataset's `--retry 30 --retry-delay 2`, did not clear) is not retried. A record that fails its checksum is
never retried either: it is damage, not a dropped connection.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from webdataset.gopen import gopen, set_options

from lead_dist.data.errors import ShardError
from lead_dist.data.location import ShardLocation
from lead_dist.data.manifest import FORMAT_VERSION, read_manifest
from lead_dist.data.shards import CURL_HTTP_ERROR, ShardReadError, read_shard, transport_failure

TAR_BLOCK = 512


def records_with_retries(
    url: str,
    expected_count: int,
    *,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict]:
    """The shard's records, each exactly once, retrying transport failures from the shard's start."""
    delivered = 0
    for attempt in range(retries + 1):
        try:
            for index, record in enumerate(read_shard(url, expected_count=expected_count)):
                if index == delivered:  # records before `delivered` were yielded by an earlier attempt
                    delivered += 1
                    yield record
            return
        except ShardReadError as error:
            if error.http_error or attempt == retries:
                tries = f"after {attempt} retries" if attempt else "with no retry"
                raise ShardError(
                    f"{url}: reading failed at record {delivered} of {expected_count} {tries} ({error})"
                ) from None
            sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _read_small(url: str, *, retries: int, backoff_s: float, limit: int | None = None) -> bytes:
    """The first `limit` bytes (or all) of a file behind a URL or command, retrying transport failures."""
    for attempt in range(retries + 1):
        stream = None
        try:
            stream = gopen(url, "rb")
            if limit is None:
                data = stream.read()
                stream.close()  # reaps a download or command and raises on its failure
                return data
            # Only the first bytes are wanted: the bytes decide, not how the reader ends once we stop reading (a
            # download cut after them, or a broken pipe, must not fail a probe that got what it needed).
            set_options(stream, ignore_errors=True)
            data = stream.read(limit)
            stream.close()
            if len(data) == limit:
                return data
            raise OSError(f"only {len(data)} bytes (reader exit status {getattr(stream, 'status', None)})")
        except OSError as error:
            http_error = getattr(stream, "status", None) == CURL_HTTP_ERROR
            if http_error or attempt == retries:
                raise ShardError(f"{url}: cannot be read: {transport_failure(url, stream, error)}") from None
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def read_manifest_at(location: ShardLocation, *, retries: int, backoff_s: float) -> dict[str, Any]:
    """The prepared folder's manifest, with an error naming the URL when it is missing or not a manifest."""
    if location.kind == "local":
        return read_manifest(location.text)
    url = location.manifest_url
    hint = "is data.train a folder written by `lead-dist prepare` (or data.manifest its manifest)?"
    data = _read_small(url, retries=retries, backoff_s=backoff_s)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ShardError(f"{url}: not a manifest ({'empty' if not data else error}); {hint}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{url}: expected a manifest with format_version {FORMAT_VERSION}; {hint}")
    return manifest


def remote_sha256(url: str, retries: int, backoff_s: float) -> str:
    """sha256 of a whole file behind a URL (read into memory: for the opt-in verify_checksums check)."""
    return hashlib.sha256(_read_small(url, retries=retries, backoff_s=backoff_s)).hexdigest()


def probe_shard(url: str, *, retries: int, backoff_s: float) -> str | None:
    """Open a shard and read its first tar header: None when it looks like a shard, else what is wrong."""
    try:
        head = _read_small(url, retries=retries, backoff_s=backoff_s, limit=TAR_BLOCK)
    except ShardError as error:
        return str(error)
    if head[257:262] != b"ustar":
        return f"{url}: not a tar shard (no tar header in its first {TAR_BLOCK} bytes)"
    return None
