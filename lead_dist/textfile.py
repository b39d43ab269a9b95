"""Text files read as UTF-8, with a decoding error that names the file and the byte offset.

Python's own message (`'utf-8' codec can't decode byte 0xff in position 12: invalid start byte`) names neither the
file nor where in it; every reader of a user's text file (configs, manifests, lock files, corpora counted or
copied whole) goes through here instead. Line readers (`lead_dist.data.readers.common.numbered_lines`) name the
line as well. Imports nothing of ours.
"""

from __future__ import annotations

from pathlib import Path


class NotUtf8Error(ValueError):
    """A file that should be UTF-8 text is not; the message names the file and the byte offset."""


def decode_utf8(data: bytes, path: str | Path, *, offset: int = 0) -> str:
    """`data` as text; `offset` is where `data` starts in the file (so the offset named is the file's)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotUtf8Error(
            f"{path}: not UTF-8 text: byte offset {offset + error.start} (byte 0x{data[error.start]:02x}, "
            f"{error.reason}); save the file as UTF-8"
        ) from None


def read_utf8(path: str | Path) -> str:
    """The whole file as text (a leading byte-order mark dropped)."""
    data = Path(path).read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        return decode_utf8(data[3:], path, offset=3)
    return decode_utf8(data, path)
