"""The one qrels reader: BEIR and TREC layouts of the same judgements give the same {qid: {docid: grade}}."""

from __future__ import annotations

from pathlib import Path

import pytest

from lead_dist.data.errors import DataFormatError
from lead_dist.data.readers.qrels import read_qrels

# (1, 10) judged twice: the first grade is kept (as prepare keeps it), and the repeat is reported
JUDGEMENTS = [("1", "10", 2), ("1", "11", 0), ("2", "10", 1), ("1", "10", 1)]
EXPECTED = {"1": {"10": 2, "11": 0}, "2": {"10": 1}}


def test_beir_and_trec_layouts_read_alike(tmp_path: Path) -> None:
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in JUDGEMENTS))
    trec = tmp_path / "qrels.dev.tsv"
    trec.write_text("\n" + "".join(f"{q} 0 {d} {g}\n" for q, d, g in JUDGEMENTS))  # a blank first line is skipped
    repeats: list[str] = []
    assert read_qrels(beir, repeats.append) == EXPECTED
    assert repeats == [f"1:10 ({beir}:5)"]  # line 5: the header is line 1
    assert read_qrels(trec) == EXPECTED


def test_a_bad_grade_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n1\t11\thigh\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:3: expected an integer for the score"):
        read_qrels(path)
