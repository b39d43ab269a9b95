"""Making models: from a folder (`load_model`), from a teacher's first blocks, or fresh from a backbone config.

Every function returns the model in eval mode (as transformers' `from_pretrained` does, and never half in one
mode and half in the other): call `.train()` before training.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lead_dist.config.schema import KINDS
from lead_dist.models.backbone import build_backbone, family_for, load_backbone, load_tokenizer, truncated_copy
from lead_dist.models.base import RetrievalModel
from lead_dist.models.colbert import ColBERT
from lead_dist.models.cross_encoder import CrossEncoder
from lead_dist.models.dual_encoder import DualEncoder
from lead_dist.models.folder import read_lead_config, resolve_folder
from lead_dist.models.st_folder import read_sentence_transformers

logger = logging.getLogger(__name__)

MODEL_CLASSES: dict[str, type[RetrievalModel]] = {"de": DualEncoder, "cb": ColBERT, "ce": CrossEncoder}


def _model_class(kind: str) -> type[RetrievalModel]:
    if kind not in MODEL_CLASSES:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")
    return MODEL_CLASSES[kind]


def _with_family_defaults(kind: str, backbone_config: PretrainedConfig, options: dict[str, Any]) -> dict[str, Any]:
    """A DE pools as its family does (families.py) unless a folder or an option says how."""
    if kind == "de" and options.get("pooling") is None:
        return options | {"pooling": family_for(backbone_config).pooling}
    return options


def load_model(path_or_id: str | Path, kind: str | None = None, **options: Any) -> RetrievalModel:
    """Load a model folder (or hub id when online).

    The kind and options come from the folder's lead_dist.json; `options` given here override stored ones. For a
    folder without lead_dist.json `kind` is required; a sentence-transformers folder supplies DE pooling and
    similarity (a Normalize module means cosine). Parts the kind adds are read from lead_head.safetensors or
    initialised fresh and reported in `model.fresh_parameters`.
    """
    folder = resolve_folder(path_or_id)
    stored = read_lead_config(folder)
    if kind is None:
        if stored is None:
            raise ValueError(
                f"{path_or_id}: no lead_dist.json in the folder, so the model kind must be given: kind= one of {KINDS}"
            )
        kind = stored["kind"]
    model_class = _model_class(kind)
    base_options: dict[str, Any] = {}
    if stored is not None and stored["kind"] == kind:
        base_options = dict(stored["options"])
    elif stored is not None:
        logger.warning("%s holds a %r model; loading it as %r, stored options unused", path_or_id, stored["kind"], kind)
    elif kind == "de":
        base_options = read_sentence_transformers(folder) or {}
    for name, value in options.items():
        if name in base_options and base_options[name] != value:
            logger.info("%s: option %s=%r overrides the folder's %r", path_or_id, name, value, base_options[name])
    backbone, ignored = load_backbone(folder)
    tokenizer = load_tokenizer(folder)
    try:
        model = model_class.build(
            backbone, tokenizer, **_with_family_defaults(kind, backbone.config, base_options | options)
        )
    except ValueError as error:  # options may come from the folder's files: say which folder
        raise ValueError(f"{folder}: {error}") from error
    model.ignored_keys = ignored
    if stored is not None and stored["kind"] == kind:
        model.load_head(folder)
    else:
        model.mark_head_fresh(f"{path_or_id} holds no {kind} head")
    return model.eval()


def model_from_config(
    backbone_config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase | str | Path,
    kind: str,
    **options: Any,
) -> RetrievalModel:
    """A model with fresh random weights (backbone and head); `tokenizer` is a tokenizer or a folder holding one."""
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = load_tokenizer(resolve_folder(tokenizer, model=False))
    if len(tokenizer) > int(backbone_config.vocab_size):
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but backbone_config.vocab_size is {backbone_config.vocab_size}"
        )
    options = _with_family_defaults(kind, backbone_config, options)
    model = _model_class(kind).build(build_backbone(backbone_config), tokenizer, **options)
    model.fresh_parameters = sorted(name for name, _ in model.named_parameters())
    return model.eval()


def student_from_teacher(teacher: RetrievalModel, num_layers: int, kind: str = "de", **options: Any) -> RetrievalModel:
    """A student whose backbone is a copy of the teacher's first `num_layers` blocks, with the same tokenizer.

    When the student is of the teacher's kind it inherits the teacher's options (overridable) and a copy of its
    head; otherwise its head is fresh and reported in `fresh_parameters`.
    """
    model_class = _model_class(kind)
    backbone = truncated_copy(teacher.backbone, num_layers)
    same_kind = teacher.kind == kind
    merged = (teacher.options | options) if same_kind else _with_family_defaults(kind, backbone.config, options)
    student = model_class.build(backbone, copy.deepcopy(teacher.tokenizer), **merged)
    if same_kind:
        # Same kind and options: the head has the same shapes unless an option (e.g. projection_dim) changed.
        teacher_head, student_head = teacher.head_state_dict(), student.head_state_dict()
        if all(name in teacher_head and teacher_head[name].shape == t.shape for name, t in student_head.items()):
            student.load_state_dict({name: teacher_head[name].clone() for name in student_head}, strict=False)
            return student.eval()
    student.mark_head_fresh(f"student of kind {kind!r} from a {teacher.kind!r} teacher")
    return student.eval()
