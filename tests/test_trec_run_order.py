"""One order for a run's documents, whoever reads the file: score descending, then the rank column, then line order.

Re-ranking (`read_run` -> the top --depth), mining (`read_run` -> ranks FIRST..LAST) and prepare's negative source
(`read_trec_run`) must cut the same documents from the same file; they once sorted differently (by the rank
column in retrieval, by score in data), so a run whose rank column disagrees with its scores was cut two ways.
"""

from __future__ import annotations

from pathlib import Path

from lead_dist.data.readers.trec_run import read_run, read_trec_run
from lead_dist.retrieval.mine import mine_negatives
from lead_dist.retrieval.rerank import candidates_from_run
from lead_dist.retrieval.runfile import write_run

# (docid, rank column, score), in file order. The rank column contradicts the scores (d-best says rank 4, d-first
# rank 1), and m5 / z9 / a1 tie on score AND rank, so only line order separates them: it is neither docid order
# (a1, m5, z9) nor trec_eval's docid-descending order (z9, m5, a1).
LINES = [
    ("d-low", 3, 0.5),
    ("d-best", 4, 0.9),
    ("m5", 2, 0.5),
    ("d-first", 1, 0.5),
    ("z9", 2, 0.5),
    ("d-second", 1, 0.7),
    ("a1", 2, 0.5),
]
# By hand: 0.9 d-best; 0.7 d-second; then score 0.5 by rank: d-first (1); m5, z9, a1 (2, in line order); d-low (3).
EXPECTED = ["d-best", "d-second", "d-first", "m5", "z9", "a1", "d-low"]


def _write(path: Path) -> Path:
    other = "q2 Q0 x 1 1.0 t\n"  # a second query in between: queries keep their first-appearance order
    lines = [f"q1 Q0 {docid} {rank} {score} t\n" for docid, rank, score in LINES]
    path.write_text("".join(lines[:3]) + other + "".join(lines[3:]))
    return path


def test_every_reader_orders_ties_by_score_then_rank_then_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "run.trec")
    run = read_run(path)
    assert list(run) == ["q1", "q2"]
    assert [docid for docid, _score in run["q1"]] == EXPECTED
    assert [score for _docid, score in run["q1"]] == [0.9, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5]
    # prepare's negative source: the same ranking, cut at 1-based positions first..last
    negatives = {n.qid: n.pids for n in read_trec_run(path, (2, 5))}
    assert negatives["q1"] == tuple(EXPECTED[1:5])
    # re-ranking takes the top --depth of the same ranking; mining ranks FIRST..LAST of it
    assert candidates_from_run(run, 4, ["q1"])["q1"] == EXPECTED[:4]
    mined = mine_negatives(run, {"q1": {"d-best": 1}}, (1, 5))
    assert mined.negatives["q1"] == EXPECTED[1:5]


def test_a_written_run_reads_back_in_the_same_order(tmp_path: Path) -> None:
    # write_run renumbers ranks 1.. in the given order and prints scores with 6 decimals, so tied scores come back
    # tied and the rank column alone keeps the order: mine's negatives.trec -> prepare sees what mine cut.
    run = read_run(_write(tmp_path / "run.trec"))
    write_run(run, tmp_path / "again.trec")
    assert read_run(tmp_path / "again.trec") == run
