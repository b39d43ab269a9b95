"""The embedded demo dataset: retrieval over Python's own standard-library documentation, no download.

For every public function, class and method with a docstring of at least two sentences in a fixed list of
standard-library modules, the query is the docstring's first sentence (its summary) and the relevant passage is
the object (title: its qualified name; text: the rest of the docstring). Summaries shared by two objects
("Return self==value.") are ambiguous and left out. About one object in five (chosen by a hash of its name, so the
split is stable) is held out for the test split; every passage stays in the corpus. It is written in the BEIR
layout (corpus.jsonl, queries.jsonl, qrels/train.tsv, qrels/test.tsv) plus SOURCE.md.

Size on CPython 3.11: 944 passages and 867 queries (681 train, 186 test) (it depends on the Python version, which is
recorded in SOURCE.md); built in about a second. The same Python gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import sys
import warnings
from pathlib import Path

# Pure-Python, side-effect-free modules with well-written docstrings; missing ones (removed in a newer Python)
# are skipped, so the dataset is defined per Python version.
MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "collections", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "difflib", "email.message", "email.utils", "enum", "fnmatch", "fractions",
    "ftplib", "functools", "gettext", "glob", "gzip", "heapq", "hmac", "html.parser", "http.client",
    "http.cookiejar", "imaplib", "inspect", "ipaddress", "json", "logging", "logging.handlers", "mailbox",
    "mimetypes", "netrc", "ntpath", "numbers", "optparse", "pathlib", "pickle", "pkgutil", "platform", "poplib",
    "posixpath", "pprint", "queue", "random", "reprlib", "sched", "secrets", "selectors", "shlex", "shutil",
    "smtplib", "socket", "socketserver", "statistics", "string", "subprocess", "sysconfig", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "typing", "unittest.case",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile",
)  # fmt: skip
TEST_SHARE_PERCENT = 20
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split_docstring(doc: str) -> tuple[str, str] | None:
    """(summary sentence, rest) of a docstring, or None when there is no usable rest."""
    flat = " ".join(doc.split())
    parts = _SENTENCE_END.split(flat, maxsplit=1)
    if len(parts) != 2:
        return None
    summary, rest = parts[0].strip(), parts[1].strip()
    if len(summary.split()) < 3 or len(rest.split()) < 5 or not summary.endswith((".", "!", "?")):
        return None
    return summary, rest


def _documented_objects() -> list[tuple[str, str]]:
    """(qualified name, docstring) of public functions, classes and their methods, in a stable order."""
    found: dict[str, str] = {}
    with warnings.catch_warnings():
        # Importing and inspecting some modules warns about deprecated aliases (typing.io); harmless here.
        warnings.simplefilter("ignore")
        for module_name in MODULES:
            _collect_module(module_name, found)
    return sorted(found.items())


def _collect_module(module_name: str, found: dict[str, str]) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if not (inspect.isfunction(value) or inspect.isclass(value)):
            continue
        if value.__doc__:
            found[f"{module_name}.{name}"] = value.__doc__
        if inspect.isclass(value):
            for member, attribute in sorted(vars(value).items()):
                if not member.startswith("_") and inspect.isfunction(attribute) and attribute.__doc__:
                    found[f"{module_name}.{name}.{member}"] = attribute.__doc__


def _is_test(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100 < TEST_SHARE_PERCENT


def build_demo_records() -> tuple[list[dict], list[dict], list[tuple[str, str]], list[tuple[str, str]]]:
    """(corpus, queries, train qrels, test qrels) as plain lists."""
    usable = [(name, split) for name, doc in _documented_objects() if (split := _split_docstring(doc)) is not None]
    summary_counts: dict[str, int] = {}
    for _name, (summary, _rest) in usable:
        summary_counts[summary.lower()] = summary_counts.get(summary.lower(), 0) + 1
    corpus, queries, train, test = [], [], [], []
    for index, (name, (summary, rest)) in enumerate(usable):
        pid = f"d{index}"
        corpus.append({"_id": pid, "title": name, "text": rest})
        if summary_counts[summary.lower()] > 1:
            continue  # an ambiguous summary would make a query with several equally right answers
        qid = f"q{index}"
        queries.append({"_id": qid, "text": summary})
        (test if _is_test(name) else train).append((qid, pid))
    return corpus, queries, train, test


def write_demo_dataset(folder: str | Path) -> dict[str, int]:
    """Write the BEIR-layout demo dataset into `folder`; returns its counts."""
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, train, test = build_demo_records()

    def write_jsonl(path: Path, rows: list[dict]) -> None:
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def write_qrels(path: Path, pairs: list[tuple[str, str]]) -> None:
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            handle.writelines(f"{qid}\t{pid}\t1\n" for qid, pid in pairs)

    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", queries)
    write_qrels(folder / "qrels" / "train.tsv", train)
    write_qrels(folder / "qrels" / "test.tsv", test)
    counts = {"passages": len(corpus), "queries": len(queries), "train": len(train), "test": len(test)}
    version = ".".join(map(str, sys.version_info[:3]))
    (folder / "SOURCE.md").write_text(
        "lead_dist demo dataset: Python standard-library docstrings (summary sentence -> documented object).\n"
        f"Built by lead_dist.data.demo_dataset on Python {version}: {counts['passages']} passages, "
        f"{counts['queries']} queries ({counts['train']} train, {counts['test']} test).\n",
        encoding="utf-8",
    )
    return counts


if __name__ == "__main__":
    print(write_demo_dataset(sys.argv[1] if len(sys.argv) > 1 else "demo_data"))
