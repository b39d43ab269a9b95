"""Collation per model kind, from raw text: the model tokenizes (teacher and student each with their own
tokenizer and layout; dynamic padding and length caps live in the model's tokenize_* methods).

Passages are laid out per query as [positive, negative_1 .. negative_n], queries one after the other, so query i's
positive is passage i * (1 + n). A cross encoder gets one (query, passage) pair per passage in the same order, its
length cap being query_max_length + passage_max_length (the pair holds both).
"""

from __future__ import annotations

from typing import Any


def group_size(examples: list[dict]) -> int:
    """1 + n, the same for every example of a batch (else the score matrix has no fixed layout)."""
    if not examples:
        raise ValueError("collate_for: empty batch")
    sizes = {len(example["neg_ids"]) for example in examples}
    if len(sizes) != 1:
        raise ValueError(
            f"collate_for: examples carry different numbers of negatives {sorted(sizes)}; prepare drops queries "
            "without negatives when a negative source is given (see --keep-without-negatives)"
        )
    return 1 + sizes.pop()


def passage_layout(examples: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """(ids, titles, texts) in [q0 pos, q0 negs.., q1 pos, ...] order."""
    group_size(examples)
    ids, titles, texts = [], [], []
    for example in examples:
        ids += [example["pos_id"], *example["neg_ids"]]
        titles += [example["pos_title"], *example["neg_titles"]]
        texts += [example["pos_text"], *example["neg_texts"]]
    return ids, titles, texts


def collate_for(model: Any, examples: list[dict], query_max_length: int, passage_max_length: int) -> dict:
    """DE/CB: {"queries": tokens, "passages": tokens}; CE: {"pairs": tokens} (see docs/INTERFACES.md)."""
    _ids, titles, texts = passage_layout(examples)
    queries = [example["query"] for example in examples]
    if model.kind in ("de", "cb"):
        return {
            "queries": model.tokenize_queries(queries, query_max_length),
            "passages": model.tokenize_passages(titles, texts, passage_max_length),
        }
    if model.kind == "ce":
        per_group = group_size(examples)
        repeated = [query for query in queries for _ in range(per_group)]
        return {"pairs": model.tokenize_pairs(repeated, titles, texts, query_max_length + passage_max_length)}
    raise ValueError(f"collate_for: model kind {model.kind!r}; expected 'de', 'cb' or 'ce'")
