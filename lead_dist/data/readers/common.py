"""Line-level readers shared by every source format: numbered lines, JSON lines, tab-separated columns.

Every malformed line raises `DataFormatError` naming the file, the 1-based line number and what was expected.
Blank lines (only whitespace) are not records and are skipped; everything else is either returned or an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lead_dist.data.errors import DataFormatError


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) for every non-blank line; UTF-8, a leading BOM is ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found (expected a readable file)")
    # Binary mode so that only "\n" ends a line: text mode would also split on a lone "\r" inside a field.
    offset = 0  # of the line's first byte in the file, so a decoding error names the file's byte offset
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw, start = raw[3:], 3
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                where = f"{error.reason} at byte offset {start + error.start} of the file"
                raise DataFormatError.at(path, number, f"UTF-8 text ({where})") from None
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                yield number, line


def json_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each line of a JSON-lines file; each line must be one JSON object."""
    for number, line in numbered_lines(path):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError.at(path, number, f"one JSON object per line ({error.msg})", line) from None
        if not isinstance(value, dict):
            raise DataFormatError.at(path, number, "a JSON object per line", line)
        yield number, value


def string_field(path: str | Path, number: int, record: dict, key: str, *, required: bool = True) -> str:
    """record[key] as a string; ids may be JSON numbers (written as integers), texts must be strings."""
    if key not in record:
        if not required:
            return ""
        raise DataFormatError.at(path, number, f'a "{key}" field', json.dumps(record)[:200])
    value = record[key]
    if isinstance(value, bool) or value is None:
        raise DataFormatError.at(path, number, f'"{key}" to be a string', repr(value))
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise DataFormatError.at(path, number, f'"{key}" to be a string', repr(value))
    return value


def tsv_rows(
    path: str | Path, columns: int | tuple[int, ...], layout: str, *, header_first_field: str | None = None
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each tab-separated line with one of the allowed column counts.

    `layout` names the columns in errors ("qid<TAB>text"). A first line whose first field equals
    `header_first_field` is a header and is skipped.
    """
    allowed = (columns,) if isinstance(columns, int) else columns
    first = True
    for number, line in numbered_lines(path):
        fields = line.split("\t")
        if first and header_first_field is not None and fields[0].strip() == header_first_field:
            first = False
            continue
        first = False
        if len(fields) not in allowed:
            counts = " or ".join(str(c) for c in allowed)
            raise DataFormatError.at(
                path, number, f"{counts} tab-separated columns ({layout}), found {len(fields)}", line
            )
        yield number, fields


def whitespace_rows(path: str | Path, columns: int, layout: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each line split on any whitespace, with exactly `columns` fields."""
    for number, line in numbered_lines(path):
        fields = line.split()
        if len(fields) != columns:
            raise DataFormatError.at(path, number, f"{columns} whitespace-separated columns ({layout})", line)
        yield number, fields


def checked_id(path: str | Path, number: int, value: str, what: str, *, numeric: bool) -> str:
    """A non-empty id without surrounding whitespace; all digits when the format requires numeric ids."""
    value = value.strip()
    if not value:
        raise DataFormatError.at(path, number, f"a non-empty {what}", value)
    if numeric and not (value.isascii() and value.isdigit()):
        raise DataFormatError.at(path, number, f"a numeric {what}", value)
    return value


def checked_number(path: str | Path, number: int, value: str, what: str, *, integer: bool) -> float:
    """A relevance grade, rank or score parsed as a number, with an error naming the line otherwise."""
    try:
        parsed = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise DataFormatError.at(path, number, f"{kind} for the {what}", value) from None
    if not integer and parsed != parsed:  # NaN compares unequal to itself and cannot rank anything
        raise DataFormatError.at(path, number, f"a number (not NaN) for the {what}", value)
    return parsed
