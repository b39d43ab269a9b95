"""Index backends: faiss Flat, torch exact and numpy brute force agree; shard merging is exact; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from rounding import assert_same_ranking, reorder_bound

from lead_dist.retrieval.index_base import SearchResult, merge_topk
from lead_dist.retrieval.index_faiss import FaissIndex, faiss_gpu_count
from lead_dist.retrieval.index_torch import TorchExactIndex
from lead_dist.retrieval.indexes import make_index


def _data(seed: int, n: int = 3000, q: int = 40, dim: int = 24):
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((q, dim)).astype(np.float32)
    ids = [f"p{i}" for i in range(n)]
    return corpus, queries, ids


def _tie(corpus, queries) -> float:
    """A float32 inner product of D terms is within D eps/2 sum_d |q_d p_d| of the exact one (tests/rounding.py), so two
    float32 backends give scores within D eps max sum|q_d p_d| of each other and may order documents closer than
    that either way (about 1e-4 here, against scores of 5 to 15)."""
    return float(reorder_bound(corpus.shape[1], (np.abs(queries.astype(np.float64)) @ np.abs(corpus.T)).max()))


def _numpy_topk(corpus, queries, ids, k):
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    order = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.asarray(ids, dtype=object)[order]


@pytest.mark.parametrize("seed", [0, 1])
def test_faiss_flat_torch_exact_and_numpy_agree(seed):
    corpus, queries, ids = _data(seed)
    k = 50
    ref_scores, ref_ids = _numpy_topk(corpus, queries, ids, k)
    faiss_index = FaissIndex(corpus.shape[1], "Flat")
    # small chunks force the running top-k merge across corpus chunks and query chunks
    torch_index = TorchExactIndex(corpus.shape[1], device="cpu", corpus_chunk=700, query_chunk=16)
    tie = _tie(corpus, queries)
    for index in (faiss_index, torch_index):
        index.add(corpus[:1000], ids[:1000])
        index.add(corpus[1000:], ids[1000:])  # two adds = one index
        result = index.search(queries, k)
        assert result.scores.shape == (len(queries), k)
        np.testing.assert_allclose(result.scores, ref_scores, rtol=0, atol=tie)
        gaps = np.diff(ref_scores, axis=1)
        tied = np.zeros_like(ref_ids, dtype=bool)
        tied[:, 1:] |= np.abs(gaps) < tie
        tied[:, :-1] |= np.abs(gaps) < tie
        assert tied.mean() < 0.05  # random data: ties are rare, so the id comparison below means something
        assert (result.doc_ids == ref_ids)[~tied].all()


def test_merging_per_rank_shards_equals_one_index():
    corpus, queries, ids = _data(3, n=2000)
    k = 30
    whole = make_index("torch", corpus.shape[1], device="cpu")
    whole.add(corpus, ids)
    expected = whole.search(queries, k)
    bounds = [0, 300, 1100, 2000]  # unequal shards, as ranks with uneven shares would hold
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        shard = make_index("faiss", corpus.shape[1])
        shard.add(corpus[start:end], ids[start:end])
        parts.append(shard.search(queries, k))
    merged = merge_topk(parts, k)
    # torch's and faiss's float32 kernels sum in other orders: scores within rounding, and neighbours closer than
    # that (this data has one pair 4.3e-5 apart) may trade places.
    tie = _tie(corpus, queries)
    np.testing.assert_allclose(merged.scores, expected.scores, rtol=0, atol=tie)
    for row in range(len(queries)):
        assert_same_ranking(expected.doc_ids[row], merged.doc_ids[row], expected.scores[row], tie, f"query {row}")


def test_merge_keeps_the_maximum_and_pads_small_shards():
    a = SearchResult(np.array([[0.9, 0.1]], np.float32), np.array([["a1", "a2"]], dtype=object))
    b = SearchResult(np.array([[0.5, -np.inf]], np.float32), np.array([["b1", ""]], dtype=object))
    merged = merge_topk([a, b], 3)
    assert merged.doc_ids.tolist() == [["a1", "b1", "a2"]]
    assert merged.scores.tolist()[0] == pytest.approx([0.9, 0.5, 0.1])
    padded = merge_topk([b], 3)
    assert padded.as_run(["q"]) == {"q": [("b1", 0.5)]}  # padding never reaches a run


def test_k_larger_than_corpus_is_padded_not_invented():
    corpus, queries, ids = _data(4, n=7, q=3)
    for backend in ("torch", "faiss"):
        index = make_index(backend, corpus.shape[1], device="cpu")
        index.add(corpus, ids)
        result = index.search(queries, 10)
        assert result.scores.shape == (3, 10)
        assert np.isinf(result.scores[:, 7:]).all()
        assert all(len(ranked) == 7 for ranked in result.as_run(["a", "b", "c"]).values())


def test_ivf_probing_every_list_is_exact():
    corpus, queries, ids = _data(5, n=2000)
    flat = make_index("faiss", corpus.shape[1])
    flat.add(corpus, ids)
    ivf = make_index("faiss", corpus.shape[1], factory="IVF16,Flat", search_params="nprobe=16")
    ivf.add(corpus, ids)  # trains on the first add
    expected, got = flat.search(queries, 20), ivf.search(queries, 20)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=0, atol=_tie(corpus, queries))  # other kernels
    hnsw = make_index("faiss", corpus.shape[1], factory="HNSW16")
    hnsw.add(corpus, ids)
    overlap = np.mean(
        [len(set(a) & set(b)) / 20 for a, b in zip(hnsw.search(queries, 20).doc_ids, expected.doc_ids, strict=True)]
    )
    assert overlap > 0.8  # approximate, but an index of the right vectors


def test_fp16_torch_storage_is_close():
    corpus, queries, ids = _data(6)
    exact = make_index("torch", corpus.shape[1], device="cpu")
    half = make_index("torch", corpus.shape[1], device="cpu", fp16=True)
    for index in (exact, half):
        index.add(corpus, ids)
    expected = exact.search(queries, 10).scores
    # fp16 storage rounds every query and passage coordinate by u16 = 2**-11 (relative) and the fp32-accumulated
    # product back to fp16: within 2 u16 sum|q_d p_d| + u16 |s| of the exact score, the float32 one within `_tie`.
    u16 = float(np.finfo(np.float16).eps) / 2
    abs_dots = (np.abs(queries.astype(np.float64)) @ np.abs(corpus.T)).max()
    bound = 2 * u16 * abs_dots + u16 * np.abs(expected).max() + _tie(corpus, queries)
    np.testing.assert_allclose(half.search(queries, 10).scores, expected, rtol=0, atol=bound)


def test_dimension_mismatch_and_bad_factory_refused():
    corpus, queries, ids = _data(7, n=10)
    for backend in ("torch", "faiss"):
        index = make_index(backend, corpus.shape[1], device="cpu")
        index.add(corpus, ids)
        with pytest.raises(ValueError, match="dimension mismatch"):
            index.search(queries[:, :10], 5)
        with pytest.raises(ValueError, match="dimension mismatch"):
            index.add(corpus[:, :10], ids)
    with pytest.raises(ValueError, match="index_factory"):
        FaissIndex(8, "NotAnIndex")
    with pytest.raises(ValueError, match="unknown index backend"):
        make_index("annoy", 8)
    if faiss_gpu_count() == 0:  # faiss-cpu: asking for GPUs is an error, not a silent CPU fallback
        with pytest.raises(RuntimeError, match="no GPUs"):
            make_index("faiss-gpu", 8)
