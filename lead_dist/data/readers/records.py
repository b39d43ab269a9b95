"""The plain records every source reader yields; each remembers where it came from for error and drop reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str
    source: str
    line: int


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    source: str
    line: int


@dataclass(frozen=True)
class Judgement:
    """A relevance judgement (qid, pid, score); score > 0 (or >= the configured minimum) makes a positive."""

    qid: str
    pid: str
    score: float
    source: str
    line: int


@dataclass(frozen=True)
class NegativeList:
    """Negative passage ids for one query, in source order (already cut to the configured depth for runs)."""

    qid: str
    pids: tuple[str, ...]
    source: str
    line: int
