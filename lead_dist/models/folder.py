"""The files lead_dist adds to a transformers model folder (the sentence-transformers files: st_folder.py).

A saved model folder holds:
    config.json, model.safetensors, tokenizer files   the backbone, loadable by transformers' AutoModel
    lead_dist.json                                    {"format": 1, "kind": "de"|"cb"|"ce", "options": {...}}
    lead_head.safetensors                             parts the kind adds (ColBERT projection, CE head), if any
    modules.json, sentence_bert_config.json,          DE only: lets sentence_transformers load the folder with
    1_Pooling/config.json, 2_Normalize/               the same pooling and normalisation (st_folder.py)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from lead_dist.config.schema import KINDS
from lead_dist.models.families import FAMILIES, unsupported_type
from lead_dist.models.packaged import packaged_copy

LEAD_CONFIG = "lead_dist.json"
HEAD_WEIGHTS = "lead_head.safetensors"
FORMAT_VERSION = 1
# What a model folder needs from the hub: configs, safetensors weights, tokenizer files, sentence-transformers
# modules. Never pickled `*.bin` weights, never code.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Normalize/*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(text: str) -> bool:
    """A path (absolute, relative, ~), not a hub id like `org/name`: it exists, or it starts like a path."""
    return Path(text).expanduser().exists() or text.startswith(("/", ".", "~")) or text.count("/") > 1


def not_a_model(text: str) -> str | None:
    """Why the local folder `text` is not a model folder lead_dist can use (no config.json, one without model_type or
    of a model_type outside `families.FAMILIES`), or None."""
    config = Path(text).expanduser() / "config.json"
    if not config.is_file():
        return f"{text} is not a lead_dist, transformers or sentence-transformers model folder (no config.json)"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
        model_type = None
    if model_type is None:
        return f"{config} is not a transformers model config (no model_type key)"
    if model_type not in FAMILIES:
        return f"{config}: {unsupported_type(model_type)}"
    return None


def check_model_folder(key: str, text: str) -> None:
    """Before any loading: `key` (a flag or config key) names a local model folder, or a packaged / hub id.
    ValueError (bad input, one line from the CLI) naming the key otherwise."""
    if packaged_copy(text) is not None or not looks_local(text):
        return
    if not Path(text).expanduser().is_dir():
        raise ValueError(f"{key}: {text} does not exist (or is not a folder)")
    problem = not_a_model(text)
    if problem:
        raise ValueError(f"{key}: {problem}")


def resolve_folder(path_or_id: str | Path, *, model: bool = True) -> Path:
    """A local model folder for a path, or for a hub id (`name` / `org/name`, fetched when online or cached).
    A local folder must hold a model (`not_a_model`) unless `model=False` (a tokenizer folder)."""
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
        problem = not_a_model(text) if model else None
        if problem:
            raise ValueError(problem)
        return path
    packaged = packaged_copy(text)
    if packaged is not None:
        return packaged
    if isinstance(path_or_id, str) and _HUB_ID.match(text):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(text, allow_patterns=HUB_FILES))
        except Exception as error:  # offline, unknown id, no network: one message naming both readings
            raise FileNotFoundError(
                f"{text!r} is not a local folder, and fetching it as a hub model failed: {error}"
            ) from error
    raise FileNotFoundError(f"model folder {text!r} does not exist (or is not a folder)")


def read_lead_config(folder: Path) -> dict[str, Any] | None:
    """The folder's lead_dist.json as {"kind", "options"}, or None when the folder has none."""
    path = folder / LEAD_CONFIG
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with keys 'format', 'kind', 'options'")
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: key 'format' must be {FORMAT_VERSION}, got {data.get('format')!r}")
    if data.get("kind") not in KINDS:
        raise ValueError(f"{path}: key 'kind' must be one of {KINDS}, got {data.get('kind')!r}")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"{path}: key 'options' must be an object, got {type(options).__name__}")
    return {"kind": data["kind"], "options": options}


def write_lead_config(folder: Path, kind: str, options: dict[str, Any]) -> None:
    payload = {"format": FORMAT_VERSION, "kind": kind, "options": options}
    (folder / LEAD_CONFIG).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_head(folder: Path) -> dict[str, Tensor] | None:
    path = folder / HEAD_WEIGHTS
    return load_file(str(path)) if path.is_file() else None


def write_head(folder: Path, tensors: dict[str, Tensor]) -> None:
    if tensors:
        # safetensors refuses views sharing storage; contiguous copies on CPU are what we want on disk anyway.
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(folder / HEAD_WEIGHTS))


def remove_kind_files(folder: Path) -> None:
    """Delete the files a save of some kind may have written (head, sentence-transformers modules)."""
    for name in (HEAD_WEIGHTS, "modules.json", "sentence_bert_config.json"):
        (folder / name).unlink(missing_ok=True)
    for name in ("1_Pooling", "2_Normalize"):
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
