"""The reference code's training JSON (LEAD_SPEC section 11) and its passage tsv.

JSON: a list of objects {"question": str, "positive_ctxs": [...], "hard_negative_ctxs": [...], ...}. A context is a
passage id (integer or digit string) or an object carrying one under "passage_id", "psg_id" or "id"; the passage's
text always comes from the tsv. The query id is the object's "qid" / "query_id" / "id" when present, else its
0-based position in the list. Passage tsv: id<TAB>text<TAB>title with 1-based numeric ids (an `id` header line is
skipped). `id_offset` is added to every JSON passage id, for JSON files that count passages from 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lead_dist.data.errors import DataFormatError
from lead_dist.data.readers.common import checked_id, tsv_rows
from lead_dist.data.readers.records import Judgement, NegativeList, Passage, Query

_CONTEXT_ID_KEYS = ("passage_id", "psg_id", "id")
_QUERY_ID_KEYS = ("qid", "query_id", "id")


def read_passages(path: str | Path) -> Iterator[Passage]:
    for number, fields in tsv_rows(path, 3, "id<TAB>text<TAB>title", header_first_field="id"):
        pid = checked_id(path, number, fields[0], "passage id", numeric=True)
        if int(pid) < 1:
            raise DataFormatError.at(path, number, "a 1-based passage id (>= 1)", fields[0])
        yield Passage(str(int(pid)), fields[2], fields[1], str(path), number)


def _context_id(path: Path, item: int, value: object, id_offset: int) -> str:
    where = f"{path}: item {item}"
    if isinstance(value, dict):
        found = next((k for k in _CONTEXT_ID_KEYS if k in value), None)
        if found is None:
            raise DataFormatError(
                f"{where}: expected a context object with one of {_CONTEXT_ID_KEYS}, got {value!r:.200}"
            )
        value = value[found]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataFormatError(f"{where}: expected an integer passage id, got {value!r:.200}")
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()):
        raise DataFormatError(f"{where}: expected an integer passage id, got {value!r:.200}")
    return str(int(text) + id_offset)


def read_training_json(
    path: str | Path, *, id_offset: int = 0
) -> Iterator[tuple[Query, list[Judgement], NegativeList]]:
    """(query, its positive judgements, its negative list) for each object of the list, in file order."""
    path = Path(path)
    text = _read_text(path)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError.at(path, error.lineno, f"a JSON list of training objects ({error.msg})") from None
    if not isinstance(items, list):
        raise DataFormatError(f"{path}: expected a JSON list of training objects, got {type(items).__name__}")
    for index, item in enumerate(items):
        where = f"{path}: item {index}"
        if not isinstance(item, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(item).__name__}")
        question = item.get("question")
        if not isinstance(question, str):
            raise DataFormatError(f'{where}: expected "question" to be a string, got {question!r:.200}')
        qid_key = next((k for k in _QUERY_ID_KEYS if k in item), None)
        qid = str(item[qid_key]).strip() if qid_key else str(index)
        if not qid:
            raise DataFormatError(f'{where}: expected a non-empty "{qid_key}"')
        positives = item.get("positive_ctxs")
        negatives = item.get("hard_negative_ctxs", [])
        if not isinstance(positives, list):
            raise DataFormatError(f'{where}: expected "positive_ctxs" to be a list, got {positives!r:.200}')
        if not isinstance(negatives, list):
            raise DataFormatError(f'{where}: expected "hard_negative_ctxs" to be a list, got {negatives!r:.200}')
        source = str(path)
        query = Query(qid, question, source, index)
        judgements = [Judgement(qid, _context_id(path, index, c, id_offset), 1, source, index) for c in positives]
        neg_ids = tuple(_context_id(path, index, c, id_offset) for c in negatives)
        yield query, judgements, NegativeList(qid, neg_ids, source, index)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found (expected the reference training JSON)")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataFormatError.at(path, line, f"UTF-8 text ({error.reason})") from None
