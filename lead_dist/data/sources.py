"""Turn the prepare options of each input format into a SourceBundle (what to read, and from which files)."""

from __future__ import annotations

from pathlib import Path

from lead_dist.data.assemble import SourceBundle
from lead_dist.data.readers import beir, msmarco, reference_json, trec_run

FORMATS = ("beir", "msmarco", "reference", "demo")


def beir_bundle(folder: str | Path, split: str) -> SourceBundle:
    corpus, queries, qrels = beir.beir_paths(folder, split)
    return SourceBundle(
        passages=lambda: beir.read_corpus(corpus),
        queries=lambda: beir.read_queries(queries),
        judgements=lambda: beir.read_qrels(qrels),
        files=[str(corpus), str(queries), str(qrels)],
        file_of={"passages": str(corpus), "queries": str(queries), "judgements": str(qrels)},
    )


def msmarco_bundle(
    folder: str | Path | None,
    split: str,
    *,
    collection: str | Path | None = None,
    queries: str | Path | None = None,
    qrels: str | Path | None = None,
    triples: str | Path | None = None,
    negative_lists: str | Path | None = None,
) -> SourceBundle:
    """Explicit file options win; otherwise the standard names inside `folder`."""
    if collection is None or queries is None or qrels is None:
        if folder is None:
            raise ValueError("--format msmarco needs --input FOLDER or all of --collection, --queries, --qrels")
        defaults = msmarco.msmarco_default_paths(folder, split)
        collection = collection or defaults["collection"]
        queries = queries or defaults["queries"]
        qrels = qrels or defaults["qrels"]
    bundle = SourceBundle(
        passages=lambda: msmarco.read_collection(collection),
        queries=lambda: msmarco.read_queries(queries),
        judgements=lambda: msmarco.read_qrels(qrels),
        files=[str(collection), str(queries), str(qrels)],
        file_of={"passages": str(collection), "queries": str(queries), "judgements": str(qrels)},
    )
    if triples is not None and negative_lists is not None:
        raise ValueError("--triples and --negative-lists are two negative sources; give one")
    if triples is not None:
        bundle.negatives = lambda: (negatives for _pos, negatives in msmarco.read_triples(triples))
        bundle.extra_positives = lambda: (positive for positive, _neg in msmarco.read_triples(triples))
        bundle.files.append(str(triples))
    if negative_lists is not None:
        bundle.negatives = lambda: msmarco.read_negative_lists(negative_lists)
        bundle.files.append(str(negative_lists))
    return bundle


def reference_bundle(training_json: str | Path, passages: str | Path, *, id_offset: int = 0) -> SourceBundle:
    """The reference JSON gives queries, positives and negatives together: read it once, serve three views."""
    items = list(reference_json.read_training_json(training_json, id_offset=id_offset))
    return SourceBundle(
        passages=lambda: reference_json.read_passages(passages),
        queries=lambda: (query for query, _j, _n in items),
        judgements=lambda: (judgement for _q, judgements, _n in items for judgement in judgements),
        negatives=lambda: (negatives for _q, _j, negatives in items),
        files=[str(training_json), str(passages)],
        file_of={"passages": str(passages), "queries": str(training_json), "judgements": str(training_json)},
    )


def add_run_negatives(bundle: SourceBundle, run_file: str | Path, depth: tuple[int, int]) -> None:
    """Use a TREC run as the negative source (replacing none: a format's own negatives and a run conflict)."""
    if bundle.negatives is not None:
        raise ValueError("--negatives-run given, but the input already has a negative source (triples/lists/JSON)")
    bundle.negatives = lambda: trec_run.read_trec_run(run_file, depth)
    bundle.files.append(str(run_file))
