"""Full-corpus evaluation and hard-negative mining: sharded encoding, faiss / torch exact search, TREC metrics.

See README.md in this folder for the commands, the on-disk layout and the metric keys. The trainer's entry point is
`evaluate_model`. Names load on first use, so `import lead_dist.retrieval` pulls in neither torch nor pytrec_eval.
"""

from __future__ import annotations

__all__ = ["METRIC_KEYS", "evaluate_model", "score_run"]


def __getattr__(name: str):
    if name == "evaluate_model":
        from lead_dist.retrieval.evaluate import evaluate_model

        return evaluate_model
    if name in ("METRIC_KEYS", "score_run"):
        from lead_dist.retrieval import metrics

        return getattr(metrics, name)
    raise AttributeError(name)
