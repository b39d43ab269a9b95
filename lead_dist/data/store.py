"""The on-disk store `prepare` joins in: passages, queries, judgements, positives and negatives in one sqlite3
file, so that prepare's peak memory does not grow with the corpus.

Why sqlite3 and not an external sorted join: it is in the standard library, it answers the join's questions ("is
this passage id known?", "was this pair judged before?") one record at a time, in input order, so every rule of
`assemble.py` (first occurrence kept, drops listed with file and line, file order preserved) stays the same code
path as before and the output stays byte-identical; a sorted join would reorder the input and need the order
restored afterwards. The file is scratch: no journal, no fsync, and a fixed page cache (`CACHE_MIB`), which is
what bounds the memory. Its size on disk is about that of the corpus text.

Tables (the `seq` columns keep input order; `examples.pos` is the order of each query's first positive):
    passages(seq, id UNIQUE, title, text)      queries(id, text, kept)      judged(qid, pid)
    qrels(seq, qid, pid, score)                positives(seq, qid, pid)     negatives(seq, qid, pid)
    examples(pos, qid UNIQUE)                  kept(pos, qid): the examples that are written, in that order
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

CACHE_MIB = 32  # sqlite's page cache; the OS file cache (not this process's memory) holds the rest

_SCHEMA = """
CREATE TABLE passages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, title TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE queries (id TEXT PRIMARY KEY, text TEXT NOT NULL, kept INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE judged (qid TEXT, pid TEXT, PRIMARY KEY (qid, pid)) WITHOUT ROWID;
CREATE TABLE qrels (seq INTEGER PRIMARY KEY, qid TEXT NOT NULL, pid TEXT NOT NULL, score NOT NULL);
CREATE TABLE positives (seq INTEGER PRIMARY KEY, qid TEXT NOT NULL, pid TEXT NOT NULL);
CREATE UNIQUE INDEX positives_by_query ON positives (qid, pid);
CREATE TABLE negatives (qid TEXT, pid TEXT, seq INTEGER NOT NULL, PRIMARY KEY (qid, pid)) WITHOUT ROWID;
CREATE TABLE examples (pos INTEGER PRIMARY KEY, qid TEXT NOT NULL UNIQUE);
CREATE TABLE kept (pos INTEGER PRIMARY KEY, qid TEXT NOT NULL);
"""


class PrepareStore:
    """One scratch sqlite3 database at `path` (created; the caller removes it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # transactions are opened explicitly below
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE", "locking_mode = EXCLUSIVE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute(f"PRAGMA cache_size = {-CACHE_MIB * 1024}")  # negative: KiB
        self.db.executescript(_SCHEMA)
        self.db.execute("BEGIN")  # one transaction for the whole join: nothing here needs to survive a crash
        self._negative_seq = 0

    def close(self) -> None:
        self.db.close()

    def _one(self, sql: str, *parameters: object) -> tuple | None:
        return self.db.execute(sql, parameters).fetchone()

    # --- passages and queries -------------------------------------------------------------------------------------

    def add_passage(self, pid: str, title: str, text: str) -> bool:
        """Store a passage; False when its id is already stored (the first one is kept)."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO passages (id, title, text) VALUES (?, ?, ?)", (pid, title, text)
        )
        return cursor.rowcount == 1

    def has_passage(self, pid: str) -> bool:
        return self._one("SELECT 1 FROM passages WHERE id = ?", pid) is not None

    def passage(self, pid: str) -> tuple[str, str]:
        """(title, text) of a stored passage."""
        found = self._one("SELECT title, text FROM passages WHERE id = ?", pid)
        assert found is not None, f"passage {pid!r} was checked on the way in"
        return found[0], found[1]

    def passages(self) -> Iterator[tuple[str, str, str]]:
        """(id, title, text) of every stored passage in input order."""
        yield from self.db.execute("SELECT id, title, text FROM passages ORDER BY seq")

    def count_passages(self) -> int:
        return self._one("SELECT COUNT(*) FROM passages")[0]  # type: ignore[index]

    def query_state(self, qid: str) -> str:
        """ "kept", "empty" (seen with an empty text, dropped) or "unseen"."""
        found = self._one("SELECT kept FROM queries WHERE id = ?", qid)
        return "unseen" if found is None else ("kept" if found[0] else "empty")

    def add_query(self, qid: str, text: str, *, kept: bool) -> None:
        self.db.execute("INSERT INTO queries (id, text, kept) VALUES (?, ?, ?)", (qid, text, int(kept)))

    def query_text(self, qid: str) -> str:
        return self._one("SELECT text FROM queries WHERE id = ?", qid)[0]  # type: ignore[index]

    # --- judgements and positives ---------------------------------------------------------------------------------

    def add_judged_pair(self, qid: str, pid: str) -> bool:
        """Remember a judged (query, passage) pair; False when it was judged before."""
        return self.db.execute("INSERT OR IGNORE INTO judged VALUES (?, ?)", (qid, pid)).rowcount == 1

    def add_qrel(self, qid: str, pid: str, score: float) -> None:
        self.db.execute("INSERT INTO qrels (qid, pid, score) VALUES (?, ?, ?)", (qid, pid, score))

    def add_positive(self, qid: str, pid: str) -> None:
        """A positive of a query; its first one makes the query an example (in this order)."""
        self.db.execute("INSERT INTO positives (qid, pid) VALUES (?, ?)", (qid, pid))
        self.db.execute("INSERT OR IGNORE INTO examples (qid) VALUES (?)", (qid,))

    def is_positive(self, qid: str, pid: str) -> bool:
        return self._one("SELECT 1 FROM positives WHERE qid = ? AND pid = ?", qid, pid) is not None

    def has_positives(self, qid: str) -> bool:
        return self._one("SELECT 1 FROM examples WHERE qid = ?", qid) is not None

    # --- negatives and examples -----------------------------------------------------------------------------------

    def add_negative(self, qid: str, pid: str) -> bool:
        """Append a negative to a query's list; False when the list already holds it."""
        self._negative_seq += 1
        cursor = self.db.execute("INSERT OR IGNORE INTO negatives VALUES (?, ?, ?)", (qid, pid, self._negative_seq))
        return cursor.rowcount == 1

    def example_queries(self) -> Iterator[tuple[str, int]]:
        """(qid, number of negatives) of every query with a positive, in order of its first positive."""
        rows = self.db.execute(
            "SELECT e.qid, (SELECT COUNT(*) FROM negatives n WHERE n.qid = e.qid) FROM examples e ORDER BY e.pos"
        )
        yield from rows  # streamed row by row, never fetched whole

    def keep_example(self, qid: str) -> None:
        self.db.execute("INSERT INTO kept (qid) VALUES (?)", (qid,))

    def count_kept(self) -> int:
        return self._one("SELECT COUNT(*) FROM kept")[0]  # type: ignore[index]

    def kept_example(self, index: int) -> dict:
        """The 0-based `index`-th kept example with its texts, as written into a training shard."""
        qid = self._one("SELECT qid FROM kept WHERE pos = ?", index + 1)[0]  # type: ignore[index]
        positives = self.db.execute(
            "SELECT p.id, p.title, p.text FROM positives x JOIN passages p ON p.id = x.pid WHERE x.qid = ? "
            "ORDER BY x.seq",
            (qid,),
        ).fetchall()
        negatives = self.db.execute(
            "SELECT p.id, p.title, p.text FROM negatives x JOIN passages p ON p.id = x.pid WHERE x.qid = ? "
            "ORDER BY x.seq",
            (qid,),
        ).fetchall()
        return {
            "qid": qid,
            "query": self.query_text(qid),
            "pos_ids": [row[0] for row in positives],
            "pos_titles": [row[1] for row in positives],
            "pos_texts": [row[2] for row in positives],
            "neg_ids": [row[0] for row in negatives],
            "neg_titles": [row[1] for row in negatives],
            "neg_texts": [row[2] for row in negatives],
        }

    def kept_counts(self) -> tuple[int, list[int]]:
        """(positive pairs over the kept examples, negatives per kept example)."""
        positives = self._one("SELECT COUNT(*) FROM kept k JOIN positives x ON x.qid = k.qid")[0]  # type: ignore[index]
        rows = self.db.execute("SELECT (SELECT COUNT(*) FROM negatives n WHERE n.qid = k.qid) FROM kept k")
        return positives, [row[0] for row in rows]

    # --- evaluation files -----------------------------------------------------------------------------------------

    def qrels(self) -> Iterator[tuple[str, str, float]]:
        yield from self.db.execute("SELECT qid, pid, score FROM qrels ORDER BY seq")

    def count_qrels(self) -> int:
        return self._one("SELECT COUNT(*) FROM qrels")[0]  # type: ignore[index]

    def judged_queries(self) -> Iterator[tuple[str, str]]:
        """(qid, text) of every query with a qrels line, in order of its first line."""
        yield from self.db.execute(
            "SELECT j.qid, q.text FROM (SELECT qid, MIN(seq) AS first FROM qrels GROUP BY qid) j "
            "JOIN queries q ON q.id = j.qid ORDER BY j.first"
        )
