"""The transformer backbone every model kind shares: strict loading, fresh building, truncation, layer capture.

Decisions taken here (LEAD_SPEC section 2 and section 12):
- The backbone is built WITHOUT a pooler (`add_pooling_layer=False`): no model kind uses it, and an unused
  parameter would make DDP need `find_unused_parameters`. A checkpoint's `pooler.*` weights are therefore ignored.
- Loading is strict: a backbone weight missing from the checkpoint, or a checkpoint weight the backbone does not
  have, is an error that names the keys. The only keys tolerated (and reported in `ignored_keys`) are the pooler and
  the heads of pre-training tasks (e.g. BERT's `cls.*` MLM/NSP head), which are not part of the backbone.
- Only safetensors weights are read, and `trust_remote_code` is always off: loading never runs code from a file.
- Layer `l` is the output of block `l` (HF `hidden_states[l + 1]`). Requested layers are kept by forward hooks on
  the blocks, so the full `hidden_states` tuple is never built.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

logger = logging.getLogger(__name__)


class BackboneWeightsError(ValueError):
    """A checkpoint's weights do not match the backbone it should fill (strict loading)."""


@dataclass(frozen=True)
class BackboneSpec:
    """Where a model type keeps its blocks and how its depth is written in the config."""

    blocks: str  # dotted attribute path of the nn.ModuleList of transformer blocks
    depth_key: str  # config attribute holding the number of blocks
    has_pooler: bool  # whether the HF class takes `add_pooling_layer`
    ignorable_prefixes: tuple[str, ...]  # checkpoint keys outside the backbone (pooler, pre-training heads)
    takes_token_types: bool


SUPPORTED_BACKBONES: dict[str, BackboneSpec] = {
    "bert": BackboneSpec("encoder.layer", "num_hidden_layers", True, ("pooler.", "cls."), True),
    "roberta": BackboneSpec("encoder.layer", "num_hidden_layers", True, ("pooler.", "lm_head."), True),
    "xlm-roberta": BackboneSpec("encoder.layer", "num_hidden_layers", True, ("pooler.", "lm_head."), True),
    "electra": BackboneSpec(
        "encoder.layer",
        "num_hidden_layers",
        False,
        ("discriminator_predictions.", "generator_predictions.", "generator_lm_head."),
        True,
    ),
    "distilbert": BackboneSpec(
        "transformer.layer", "n_layers", False, ("vocab_transform.", "vocab_layer_norm.", "vocab_projector."), False
    ),
}


def spec_for(config: PretrainedConfig) -> BackboneSpec:
    """The block layout of a backbone config; a clear error for architectures lead_dist does not handle."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_BACKBONES:
        raise ValueError(
            f"backbone model_type {model_type!r} is not supported; lead_dist handles BERT-like encoders: "
            f"{', '.join(sorted(SUPPORTED_BACKBONES))}"
        )
    return SUPPORTED_BACKBONES[model_type]


def _constructor_kwargs(spec: BackboneSpec) -> dict[str, object]:
    return {"add_pooling_layer": False} if spec.has_pooler else {}


def _describe_mismatch(item: object) -> str:
    """transformers reports a mismatch as (key, checkpoint shape, model shape)."""
    if isinstance(item, tuple) and len(item) == 3:
        key, stored, wanted = item
        return f"{key} (checkpoint {list(stored)}, backbone {list(wanted)})"
    return str(item)


def load_backbone(folder: str | Path) -> tuple[PreTrainedModel, list[str]]:
    """Load a backbone strictly from a local model folder (see `folder.resolve_folder` for hub ids).

    Returns the model (without pooler) and the sorted checkpoint keys that were ignored because they belong to no
    backbone part (pooler, pre-training heads).
    """
    source = str(folder)
    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    spec = spec_for(config)
    # transformers logs its own key table for every unexpected key (e.g. a sentence-transformers pooler) as a
    # warning; the checks below raise on every key that matters and log the ignored ones, so it is quieted here.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModel.from_pretrained(
            source,
            config=config,
            output_loading_info=True,
            # Report shape mismatches in the loading info (raised below with the other key errors) instead of
            # transformers' own error, which only points at a log table.
            ignore_mismatched_sizes=True,
            use_safetensors=True,
            trust_remote_code=False,
            **_constructor_kwargs(spec),
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = f"{model.base_model_prefix}."
    unexpected, ignored = [], []
    for key in sorted(info.get("unexpected_keys", ())):
        bare = key[len(prefix) :] if key.startswith(prefix) else key
        (ignored if bare.startswith(spec.ignorable_prefixes) else unexpected).append(key)
    missing = sorted(info.get("missing_keys", ()))
    mismatched = sorted(_describe_mismatch(item) for item in info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {missing}")
        if unexpected:
            parts.append(f"unexpected (not in a {config.model_type} backbone): {unexpected}")
        if mismatched:
            parts.append(f"shape mismatch: {mismatched}")
        raise BackboneWeightsError(f"{source}: backbone weights do not match; " + "; ".join(parts))
    if ignored:
        logger.info("%s: ignored %d checkpoint keys outside the backbone: %s", source, len(ignored), ignored)
    return model, ignored


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer stored with a model (never runs code from the folder)."""
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def build_backbone(config: PretrainedConfig) -> PreTrainedModel:
    """A backbone with fresh random weights from a config (no pooler)."""
    spec = spec_for(config)
    model_class = AutoModel._model_mapping[type(config)]
    return model_class(copy.deepcopy(config), **_constructor_kwargs(spec))


def blocks_of(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's list of transformer blocks."""
    module: nn.Module = backbone
    for name in spec_for(backbone.config).blocks.split("."):
        module = getattr(module, name)
    if not isinstance(module, nn.ModuleList):
        raise TypeError(f"{type(backbone).__name__}: expected a ModuleList of blocks, found {type(module).__name__}")
    return module


def depth_of(backbone: nn.Module) -> int:
    return len(blocks_of(backbone))


def truncated_copy(backbone: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """A deep copy of the backbone keeping only its first `num_layers` blocks, with its config updated."""
    depth = depth_of(backbone)
    if not 1 <= num_layers <= depth:
        raise ValueError(f"num_layers must be in 1..{depth} (the teacher's depth), got {num_layers}")
    student = copy.deepcopy(backbone)
    spec = spec_for(student.config)
    parent_path, _, attr = spec.blocks.rpartition(".")
    parent: nn.Module = student
    for name in parent_path.split(".") if parent_path else ():
        parent = getattr(parent, name)
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:num_layers]))
    setattr(student.config, spec.depth_key, num_layers)
    return student


def check_layers(layers: Sequence[int], depth: int) -> tuple[int, ...]:
    """Validate requested layer indices (0-based block outputs) against a depth."""
    chosen = tuple(int(layer) for layer in layers)
    bad = [layer for layer in chosen if not 0 <= layer < depth]
    if bad:
        raise ValueError(f"layers {bad} are out of range: this model has layers 0..{depth - 1}")
    return chosen


def run_backbone(
    backbone: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    token_type_ids: Tensor | None,
    layers: Sequence[int],
) -> tuple[Tensor, list[Tensor]]:
    """Run the backbone; return the last block's states [B, T, H] and the states of `layers`, in that order.

    Only the requested blocks' outputs are kept (forward hooks), so memory does not grow with depth.
    """
    blocks = blocks_of(backbone)
    chosen = check_layers(layers, len(blocks))
    captured: dict[int, Tensor] = {}

    def keeper(index: int):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            # Some block classes return a tuple whose first element is the hidden states.
            captured[index] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [blocks[index].register_forward_hook(keeper(index)) for index in sorted(set(chosen))]
    kwargs: dict[str, Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        if not spec_for(backbone.config).takes_token_types:
            raise ValueError(f"a {backbone.config.model_type} backbone takes no token_type_ids, but they were given")
        kwargs["token_type_ids"] = token_type_ids
    try:
        output = backbone(**kwargs, output_hidden_states=False, return_dict=True)
    finally:
        for handle in handles:
            handle.remove()
    return output.last_hidden_state, [captured[index] for index in chosen]


def stack_or_empty(tensors: list[Tensor], like: Tensor) -> Tensor:
    """Stack per-layer tensors into [K, ...]; an empty [0, ...] tensor shaped like `like` when K = 0."""
    if tensors:
        return torch.stack(tensors, dim=0)
    return like.new_empty((0, *like.shape))
