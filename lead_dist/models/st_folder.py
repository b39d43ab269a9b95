"""The sentence-transformers files of a model folder: the one strict parser (for `load_model` and retrieval's
encoder alike) and the writer a saved dual encoder uses.

What is read, and from where:
- `modules.json`: only Transformer -> Pooling [-> Normalize] is understood (class names, whatever their package
  path: sentence-transformers 6 writes `sentence_transformers.base.modules.transformer.Transformer`). A Normalize
  module means cosine similarity, none means dot product. Anything else (Dense, a second Pooling, ...) is refused:
  dropping a module would silently change the embeddings.
- the Pooling module's `config.json`: `"pooling_mode": "cls" | "mean" | "lasttoken" | ...` (sentence-transformers
  >= 6; a list of several modes concatenates them) or the older one-flag-per-mode keys (`pooling_mode_cls_token`,
  `pooling_mode_mean_tokens`, `pooling_mode_lasttoken`, ...). Exactly one mode, cls, mean or lasttoken, is
  supported; other modes, several modes, no mode at all, and keys this parser does not know are refused by name.
  `"include_prompt": false` (pool without the prompt's tokens) is refused where it would change the vector: with a
  prompt and cls or mean pooling (the last token is never a prompt token).
- `max_seq_length`: from `sentence_bert_config.json` (older layout) or else the tokenizer's `model_max_length`
  (where sentence-transformers 6 keeps it).
- `config_sentence_transformers.json`: `prompts`, read as sentence-transformers' `encode_query` and
  `encode_document` use them: the query prompt is `prompts["query"]`, the passage prompt the first of
  `prompts["document"]`, `["passage"]`, `["corpus"]` (sentence-transformers 6.3 documents that order, but fills
  an unsaved "document" with "" and so never reaches the other two: a folder with only a "passage" prompt encodes
  its passages with it here and without it there). `default_prompt_name` names the prompt of a plain `encode()`
  call, which retrieval does not make: it is checked (it must name a prompt) and otherwise not used. Its
  `similarity_fn_name` is not read, since sentence-transformers writes "cosine" by default even without a
  Normalize module.
The EOS rule is the tokenizer's (its template; `backbone.load_tokenizer` applies a tokenizer_config.json's
`add_eos_token`), so it is saved with the tokenizer, and sentence-transformers reads it from there.
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
_POOLING_KEYS = {"word_embedding_dimension", "embedding_dimension", "pooling_mode", "include_prompt", *_POOLING_FLAGS}
# The flags the writer sets (each true or false): the modes every sentence-transformers version since 2.3 reads.
_WRITTEN_FLAGS = ("cls", "mean", "max", "mean_sqrt_len_tokens", "lasttoken")
_PASSAGE_PROMPT_NAMES = ("document", "passage", "corpus")
ST_CONFIG = "config_sentence_transformers.json"
_PIPELINES = (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])
_NO_LENGTH_LIMIT = 10**9  # transformers writes a huge model_max_length when a tokenizer has none


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _pooling_config(path: Path) -> dict[str, Any]:
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
        raise ValueError(f"{path}: lead_dist supports exactly one of cls, mean or lasttoken pooling, found {modes}")
    return {"pooling": modes[0], "include_prompt": config.get("include_prompt", True)}


def _prompts(path: Path) -> dict[str, str]:
    """{"query_prompt", "passage_prompt"} as config_sentence_transformers.json gives them (empty ones left out)."""
    if not path.is_file():
        return {}
    config = _read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str | None) for v in prompts.values()):
        raise ValueError(f"{path}: 'prompts' must map prompt names to strings, got {prompts!r}")
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(f"{path}: 'default_prompt_name' {default!r} names no prompt of {sorted(prompts)}")
    found = {"query_prompt": prompts.get("query") or ""}
    passage_name = next((name for name in _PASSAGE_PROMPT_NAMES if name in prompts), None)
    found["passage_prompt"] = (prompts.get(passage_name) or "") if passage_name else ""
    return {key: value for key, value in found.items() if value}


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
    pooling = _pooling_config(pooling_path)
    prompts = _prompts(folder / ST_CONFIG)
    if prompts and not pooling["include_prompt"] and pooling["pooling"] != "lasttoken":
        raise ValueError(
            f"{pooling_path}: 'include_prompt': false with {pooling['pooling']} pooling and a prompt: "
            "sentence-transformers pools without the prompt's tokens there, which lead_dist does not reproduce"
        )
    options: dict[str, Any] = {
        "pooling": pooling["pooling"],
        "similarity": "cos" if kinds[-1] == "Normalize" else "dot",
        **prompts,
    }
    max_seq_length = _max_seq_length(folder)
    if max_seq_length is not None:
        options["max_seq_length"] = max_seq_length
    return options


def write_sentence_transformers(
    folder: Path,
    *,
    pooling: str,
    normalize: bool,
    hidden_size: int,
    max_seq_length: int,
    query_prompt: str = "",
    passage_prompt: str = "",
) -> None:
    """Write the module files that make `SentenceTransformer(folder)` pool (and normalise) as the DE does, and
    prompt its `encode_query` / `encode_document` as the DE prompts queries and passages."""
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
    flags = {flag: mode == pooling for flag, mode in _POOLING_FLAGS.items() if mode in _WRITTEN_FLAGS}
    pooling_config = {"word_embedding_dimension": hidden_size, **flags, "include_prompt": True}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2) + "\n")
    st_config = {
        "prompts": {"query": query_prompt, "document": passage_prompt},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine" if normalize else "dot",
    }
    (folder / ST_CONFIG).write_text(json.dumps(st_config, indent=2) + "\n")
