"""The sentence-transformers files of a model folder: the one strict parser (for `load_model` and retrieval's
encoder alike) and the writer a saved dual encoder uses.

What is read, and from where:
- `modules.json`: only Transformer -> Pooling [-> Normalize] is understood (class names, whatever their package
  path: sentence-transformers 6 writes `sentence_transformers.base.modules.transformer.Transformer`). A Normalize
  module means cosine similarity, none means dot product. Anything else (Dense, a second Pooling, ...) is refused:
  dropping a module would silently change the embeddings.
- the Pooling module's `config.json`: `"pooling_mode": "cls" | "mean" | ...` (sentence-transformers >= 6; a list of
  several modes concatenates them) or the older one-flag-per-mode keys (`pooling_mode_cls_token`,
  `pooling_mode_mean_tokens`, ...). Exactly one mode, cls or mean, is supported; other modes, several modes, no
  mode at all, and keys this parser does not know are refused by name.
- `max_seq_length`: from `sentence_bert_config.json` (older layout) or else the tokenizer's `model_max_length`
  (where sentence-transformers 6 keeps it).
- `config_sentence_transformers.json`: a `default_prompt_name` is refused (encode() would prepend a prompt that
  lead_dist does not); its `similarity_fn_name` is not read, since sentence-transformers writes "cosine" by default
  even without a Normalize module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lead_dist.config.schema import POOLINGS

_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
# Older sentence-transformers: one boolean key per mode (the writer below still writes the first four, which every
# sentence-transformers version reads).
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# `include_prompt` only matters when a prompt is prepended, which lead_dist never does.
_POOLING_KEYS = {"word_embedding_dimension", "embedding_dimension", "pooling_mode", "include_prompt", *_POOLING_FLAGS}
_PIPELINES = (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])
_NO_LENGTH_LIMIT = 10**9  # transformers writes a huge model_max_length when a tokenizer has none


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def pooling_mode(path: Path) -> str:
    """The pooling ("cls" or "mean") a Pooling module's config.json names, in either layout; else ValueError."""
    config = _read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    unknown = sorted(set(config) - _POOLING_KEYS)
    if unknown:
        raise ValueError(
            f"{path}: unknown pooling key(s) {unknown}; lead_dist reads 'pooling_mode' or the "
            f"pooling_mode_*_token(s) flags, and refuses what it cannot reproduce"
        )
    if "pooling_mode" in config:
        value = config["pooling_mode"]
        modes = [value] if isinstance(value, str) else value
        if not isinstance(modes, list) or not all(isinstance(mode, str) for mode in modes):
            raise ValueError(f"{path}: 'pooling_mode' must be a mode name or a list of them, got {value!r}")
    else:
        modes = [mode for flag, mode in _POOLING_FLAGS.items() if config.get(flag)]
    if len(modes) != 1 or modes[0] not in POOLINGS:
        raise ValueError(f"{path}: lead_dist supports exactly one of cls or mean pooling, found {modes}")
    return modes[0]


def _max_seq_length(folder: Path) -> int | None:
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        value = _read_json(st_config).get("max_seq_length")
        if value is not None:
            return int(value)
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        value = _read_json(tokenizer_config).get("model_max_length")
        if isinstance(value, int) and 0 < value < _NO_LENGTH_LIMIT:
            return value
    return None


def read_sentence_transformers(folder: Path) -> dict[str, Any] | None:
    """DE options of a sentence-transformers folder ({"pooling", "similarity"[, "max_seq_length"]}), or None when
    the folder has no modules.json (a bare transformers folder). Refuses what it cannot reproduce (module doc)."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(module, dict) for module in modules):
        raise ValueError(f"{modules_path}: expected a JSON list of module entries")
    kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
    if kinds not in _PIPELINES:
        raise ValueError(
            f"{modules_path}: only Transformer -> Pooling [-> Normalize] pipelines can load as a DE, found {kinds}"
        )
    pooling_path = folder / modules[1].get("path", "1_Pooling") / "config.json"
    if not pooling_path.is_file():
        raise FileNotFoundError(f"{modules_path} lists a Pooling module but {pooling_path} is missing")
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file() and _read_json(st_config).get("default_prompt_name") is not None:
        raise ValueError(
            f"{st_config}: 'default_prompt_name' is set; sentence-transformers prepends that prompt to every text, "
            "which lead_dist does not, so the embeddings would differ"
        )
    options: dict[str, Any] = {
        "pooling": pooling_mode(pooling_path),
        "similarity": "cos" if kinds[-1] == "Normalize" else "dot",
    }
    max_seq_length = _max_seq_length(folder)
    if max_seq_length is not None:
        options["max_seq_length"] = max_seq_length
    return options


def write_sentence_transformers(
    folder: Path, *, pooling: str, normalize: bool, hidden_size: int, max_seq_length: int
) -> None:
    """Write the module files that make `SentenceTransformer(folder)` pool (and normalise) as the DE does."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST_POOLING},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": _ST_NORMALIZE})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2) + "\n"
    )
    flags = list(_POOLING_FLAGS.items())[:4]
    pooling_config = {"word_embedding_dimension": hidden_size} | {flag: mode == pooling for flag, mode in flags}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2) + "\n")
