"""In-training evaluation: retrieval metrics of the student (warm-up: the model) on a dev subset every N steps."""

from __future__ import annotations

import dataclasses

from lead_dist.config import Config
from lead_dist.train.trainee import Trainee


@dataclasses.dataclass
class DevSet:
    """The in-training evaluation data: the first `data.dev_max_queries` judged queries (by id) and the corpus."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus: list[dict[str, str]]


def load_dev_set(config: Config) -> DevSet | None:
    if config.train.eval_every == 0:
        return None
    from lead_dist.retrieval.sources import iter_corpus, load_beir_split

    assert config.data.dev is not None  # config validation guarantees it
    split = load_beir_split(config.data.dev, config.data.dev_split)
    qids = sorted(q for q in split.queries if q in split.qrels)[: config.data.dev_max_queries]
    if not qids:
        raise ValueError(f"data.dev: {config.data.dev} has no judged queries in split {config.data.dev_split!r}")
    return DevSet(
        queries={q: split.queries[q] for q in qids},
        qrels={q: split.qrels[q] for q in qids},
        corpus=list(iter_corpus(split.corpus_path)),
    )


def evaluate_on_dev(config: Config, trainees: dict[str, Trainee], dev: DevSet, world: int) -> dict[str, float]:
    """Retrieval metrics of the student (warm-up: the model) on the dev subset; every rank encodes a share."""
    from lead_dist.retrieval.evaluate import evaluate_model

    model = trainees["model" if config.stage == "warmup" else "student"].model
    result = evaluate_model(
        model,
        dev.queries,
        dev.corpus,
        dev.qrels,
        k=min(1000, len(dev.corpus)),
        query_max_length=config.data.query_max_length,
        passage_max_length=config.data.passage_max_length,
        distributed=world > 1,
    )
    return {key: float(value) for key, value in result["metrics"].items()}
