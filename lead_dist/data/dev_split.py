"""A dev split carved out of a training split, so that model selection and stopping never look at the test split.

`carve_dev_queries` picks the dev queries: each judged query id gets the key sha256("<seed>:<id>"), and the
round(fraction x n) ids with the smallest keys are the dev split. The choice depends only on the ids, the fraction
and the seed: not on file order, Python's hash seed, the platform or the library version, and an id keeps its side
when other ids are added or removed (a key never changes), so the same list comes out everywhere.

`write_split_folder` writes a BEIR folder in which the training split has lost its dev queries and the dev split is
a qrels file of its own; corpus, queries and the other splits are links to the source, so nothing large is copied.
Every verb that reads a BEIR split then works on it unchanged: `prepare --split train` trains on the rest only,
`evaluate --split dev` scores the dev split, and the trainer's in-training evaluation takes it as `data.dev`.

`write_dev_corpus` writes an optional second, smaller BEIR folder for cheap in-training evaluation: the dev
queries' judged passages plus a fixed, hash-chosen sample of the rest of the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from lead_dist.data.errors import DataFormatError
from lead_dist.data.readers import beir
from lead_dist.data.readers.common import numbered_lines

LIST_NAME = "dev_queries.txt"
SUMMARY_NAME = "split.json"


def _key(seed: int, kind: str, item: str) -> bytes:
    return hashlib.sha256(f"{seed}:{kind}{item}".encode()).digest()


def carve_dev_queries(query_ids: Iterable[str], fraction: float, seed: int) -> list[str]:
    """The dev queries (sorted) among `query_ids`: round(fraction x n) of them, at least 1 and at most n - 1."""
    ids = sorted(set(query_ids))
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev fraction must lie strictly between 0 and 1, got {fraction}")
    if len(ids) < 2:
        raise ValueError(f"a dev split needs at least 2 judged queries to split, got {len(ids)}")
    size = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    return sorted(sorted(ids, key=lambda qid: _key(seed, "", qid))[:size])


def read_query_list(path: str | Path) -> list[str]:
    """Query ids, one a line; blank lines and lines starting with '#' are comments. Repeats are an error."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in numbered_lines(path):
        qid = line.strip()
        if not qid or qid.startswith("#"):
            continue
        if qid in seen:
            raise DataFormatError(f"{path}:{number}: query id {qid!r} repeats line {seen[qid]}")
        seen[qid] = number
        ids.append(qid)
    if not ids:
        raise DataFormatError(f"{path}: no query ids (expected one id a line)")
    return ids


def write_query_list(path: str | Path, ids: Iterable[str], comment: str) -> None:
    lines = [f"# {line}" for line in comment.splitlines()] + list(ids)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class SplitSummary:
    """What `write_split_folder` wrote (also saved as split.json in the folder)."""

    source: str
    split: str
    dev_name: str
    train_queries: int
    dev_queries: int
    train_judgements: int
    dev_judgements: int
    source_qrels_sha256: str
    dev_list_sha256: str
    duplicate_judgements: int = 0  # repeated (query, passage) pairs of the source qrels: the first grade is kept


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; choose a new --out (nothing was written)")


def _write_qrels(path: Path, rows: list[tuple[str, str, int]]) -> None:
    body = "".join(f"{qid}\t{pid}\t{grade}\n" for qid, pid, grade in rows)
    path.write_text("query-id\tcorpus-id\tscore\n" + body, encoding="utf-8")


def write_split_folder(
    source: str | Path, split: str, dev_ids: list[str], out: str | Path, *, dev_name: str = "dev"
) -> SplitSummary:
    """Write `out` as a BEIR folder: qrels/<split>.tsv without the dev queries, qrels/<dev_name>.tsv with only them,
    the dev list, split.json, and links to the source's corpus.jsonl, queries.jsonl and other qrels files.

    Every dev id must be a judged query of `split` (else DataFormatError naming the id); `out` must not exist or
    be empty (a user's earlier split is never overwritten).
    """
    source, out = Path(source).resolve(), Path(out)
    corpus, queries, qrels_file = beir.beir_paths(source, split)
    if dev_name == split or (source / "qrels" / f"{dev_name}.tsv").exists():
        raise ValueError(f"{source}: a qrels split named {dev_name!r} exists already (or is the split being cut)")
    rows, seen, repeats = [], set(), 0
    for j in beir.read_qrels(qrels_file):  # a repeated pair keeps its first grade, as every reader does
        if (j.qid, j.pid) in seen:
            repeats += 1
            continue
        seen.add((j.qid, j.pid))
        rows.append((j.qid, j.pid, int(j.score)))
    judged = {qid for qid, _pid, _grade in rows}
    dev = set(dev_ids)
    unknown = sorted(dev - judged)
    if unknown:
        raise DataFormatError(f"{qrels_file}: dev query id(s) {unknown[:5]} are not judged queries of split {split!r}")
    _check_empty(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    os.symlink(corpus, out / "corpus.jsonl")
    os.symlink(queries, out / "queries.jsonl")
    for other in sorted((source / "qrels").glob("*.tsv")):
        if other.stem != split:
            os.symlink(other.resolve(), out / "qrels" / other.name)
    _write_qrels(out / "qrels" / f"{split}.tsv", [r for r in rows if r[0] not in dev])
    _write_qrels(out / "qrels" / f"{dev_name}.tsv", [r for r in rows if r[0] in dev])
    comment = f"dev split of {source.name} {split}: {len(dev)} of {len(judged)} judged queries"
    write_query_list(out / LIST_NAME, sorted(dev), comment)
    summary = SplitSummary(
        source=str(source), split=split, dev_name=dev_name,
        train_queries=len(judged - dev), dev_queries=len(dev),
        train_judgements=sum(1 for r in rows if r[0] not in dev), dev_judgements=sum(1 for r in rows if r[0] in dev),
        source_qrels_sha256=_sha256(qrels_file), dev_list_sha256=hashlib.sha256("\n".join(sorted(dev)).encode()).hexdigest(),
        duplicate_judgements=repeats,
    )  # fmt: skip
    _save_summary(out, summary)
    return summary


def _save_summary(out: Path, summary: SplitSummary) -> None:
    (out / SUMMARY_NAME).write_text(json.dumps(asdict(summary), indent=1) + "\n", encoding="utf-8")


def write_dev_corpus(split_folder: str | Path, size: int, seed: int, out: str | Path, *, dev_name: str = "dev") -> dict:
    """A BEIR folder for cheap in-training evaluation: qrels/<dev_name>.tsv of `split_folder`, its queries (link),
    and a corpus.jsonl of `size` passages: every passage the dev queries judge, then the passages whose key
    sha256("<seed>:corpus:<id>") is smallest, in the source corpus order.

    Metrics on it are higher than on the whole corpus (fewer distractors): use it to compare checkpoints of one
    curve, never as a result.
    """
    folder, out = Path(split_folder).resolve(), Path(out)
    corpus_file, queries_file, dev_qrels = beir.beir_paths(folder, dev_name)
    judged = {j.pid for j in beir.read_qrels(dev_qrels)}
    ids = list(dict.fromkeys(p.id for p in beir.read_corpus(corpus_file)))  # a repeated id counts once
    missing = judged - set(ids)
    if missing:
        raise DataFormatError(f"{dev_qrels}: judged passage(s) {sorted(missing)[:5]} are not in {corpus_file}")
    if not len(judged) <= size <= len(ids):
        raise ValueError(
            f"dev corpus size must lie between {len(judged)} (the judged passages) and {len(ids)}, got {size}"
        )
    rest = sorted((pid for pid in ids if pid not in judged), key=lambda pid: _key(seed, "corpus:", pid))
    keep = judged | set(rest[: size - len(judged)])
    _check_empty(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    written: set[str] = set()  # a repeated id keeps its first line, as every corpus reader does
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as sink:
        # the source lines verbatim (every field and its formatting survive), beside the records they hold
        for (_number, line), passage in zip(numbered_lines(corpus_file), beir.read_corpus(corpus_file), strict=True):
            if passage.id in keep and passage.id not in written:
                written.add(passage.id)
                sink.write(line + "\n")
    os.symlink(queries_file.resolve(), out / "queries.jsonl")
    (out / "qrels" / f"{dev_name}.tsv").write_bytes(dev_qrels.read_bytes())
    info = {
        "size": size,
        "judged_passages": len(judged),
        "sampled_passages": size - len(judged),
        "seed": seed,
        "source_corpus_passages": len(ids),
        "share_of_other_passages_kept": round((size - len(judged)) / max(1, len(ids) - len(judged)), 4),
    }
    (out / SUMMARY_NAME).write_text(json.dumps({"dev_corpus_of": str(folder), **info}, indent=1) + "\n")
    return info
