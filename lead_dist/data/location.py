"""Where a prepared folder's training shards are: `data.train` as a local folder, a URL, a command, or a list.

    shards/scifact                                   a local folder (manifest.json + train-*.tar), as prepare wrote it
    http://host:8000/scifact  (or https://, gs://, ...)  the same folder behind a URL: NAME is appended to it
    pipe:aws s3 cp s3://bucket/scifact/{name} -     a command printing one file; {name} is replaced by the file name
    http://host/sf/train-{000000..000007}.tar        a brace-expanded shard list (webdataset's notation, also with
                                                     pipe: or local paths): only the listed shards are used
    pipe:gsutil cat gs://b/sf/train-{000000..000007}.tar

The manifest is `manifest.json` in the same place (for a list: beside the first listed shard, i.e. the braced file
name replaced by manifest.json); `manifest=` (config key `data.manifest`) names it explicitly instead. URLs are
opened by webdataset's `gopen` (http/https through curl, pipe: through the shell, anything else it knows); every
shard a list names must be described in the manifest, which gives its record count for the equal-batch plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from webdataset.gopen import gopen_schemes
from webdataset.shardlists import expand_urls

from lead_dist.data.errors import ShardError

NAME_FIELD = "{name}"
MANIFEST_NAME = "manifest.json"
_BRACES = re.compile(r"\{[^{}]*(?:\.\.|,)[^{}]*\}")  # {000000..000007} or {a,b}: a shard list, not {name}
_FILE_TOKEN = re.compile(r"[^\s/'\"]*\{[^{}]*\}[^\s/'\"]*")  # the file name around a brace group


@dataclass(frozen=True)
class ShardLocation:
    """The parsed `data.train`: `url(name)` is how to open a file of the prepared folder."""

    text: str
    kind: str  # "local", "url" (a folder behind a URL), "pipe" (a command with {name}) or "list"
    manifest_url: str
    listed: tuple[str, ...] = ()  # for a list: the expanded URLs, in the order given

    @property
    def is_local(self) -> bool:
        """Local files are read once, without retries: a damaged local file does not heal."""
        if self.kind == "list":
            return all(not _scheme(url) or _scheme(url) == "file" for url in self.listed)
        return self.kind == "local"

    def url(self, name: str) -> str:
        if self.kind == "local":
            return str(Path(self.text) / name)
        if self.kind == "url":
            return self.text.rstrip("/") + "/" + name
        if self.kind == "pipe":
            return self.text.replace(NAME_FIELD, name)
        matches = [url for url in self.listed if name in url]
        assert len(matches) == 1, f"{name} is one listed shard (checked by shards_in_list)"
        return matches[0]

    def shards_in_list(self, described: list[dict]) -> list[dict]:
        """The manifest entries of the listed shards, in list order; a listed URL naming none is an error."""
        chosen = []
        for url in self.listed:
            entries = [entry for entry in described if entry["name"] in url]
            if len(entries) != 1:
                names = ", ".join(entry["name"] for entry in described[:3])
                raise ShardError(
                    f"data.train lists {url}, which names {'no' if not entries else 'more than one'} training shard "
                    f"of the manifest {self.manifest_url} (its shards are named like {names}, ...)"
                )
            chosen.append(entries[0])
        if len({entry["name"] for entry in chosen}) != len(chosen):
            raise ShardError(f"data.train {self.text!r}: lists a shard twice")
        return chosen


def _scheme(text: str) -> str:
    scheme = urlparse(text).scheme
    return "" if len(scheme) <= 1 else scheme  # "C:\\data" is a Windows drive, not a scheme


def parse_location(text: str, manifest: str | None = None) -> ShardLocation:
    """`data.train` (and `data.manifest`) -> a ShardLocation; a form it cannot read is a ShardError saying why."""
    text = str(text)
    scheme = _scheme(text)
    if scheme and scheme not in gopen_schemes and scheme != "file":
        known = ", ".join(sorted(k for k in gopen_schemes if not k.startswith("_")) + ["file"])
        raise ShardError(f"data.train {text!r}: webdataset cannot open {scheme}: URLs (it opens {known})")
    if _BRACES.search(text):
        listed = tuple(expand_urls(text))
        if manifest is None:
            manifest = _FILE_TOKEN.sub(MANIFEST_NAME, text, count=1)
        return ShardLocation(text, "list", manifest, listed)
    if scheme == "pipe":
        if NAME_FIELD not in text:
            raise ShardError(
                f"data.train {text!r}: a pipe: command needs {NAME_FIELD} where the file name goes "
                "(e.g. pipe:aws s3 cp s3://bucket/folder/{name} -), or a brace-expanded shard list"
            )
        location = ShardLocation(text, "pipe", text.replace(NAME_FIELD, MANIFEST_NAME))
    elif scheme and scheme != "file":
        location = ShardLocation(text, "url", text.rstrip("/") + "/" + MANIFEST_NAME)
    else:
        folder = Path(urlparse(text).path) if scheme == "file" else Path(text)
        location = ShardLocation(str(folder), "local", str(folder / MANIFEST_NAME))
    if manifest is not None:
        location = ShardLocation(location.text, location.kind, manifest)
    return location
