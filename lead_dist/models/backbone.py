"""The transformer backbone every model kind shares: strict loading, fresh building, truncation, layer capture.

What differs between families (where the blocks are, which checkpoint keys are no part of the backbone, ...) is one
row of `families.FAMILIES`; this module acts on the row. Decisions taken here (LEAD_SPEC section 2 and section 12):
- The backbone is built WITHOUT a pooler (`add_pooling_layer=False`): no model kind uses it, and an unused
  parameter would make DDP need `find_unused_parameters`. A checkpoint's `pooler.*` weights are therefore ignored.
- Loading is strict: a backbone weight missing from the checkpoint, or a checkpoint weight the backbone does not
  have, is an error that names the keys. The only keys tolerated (and reported in `ignored_keys`) are the pooler and
  the heads of pre-training tasks (e.g. BERT's `cls.*` MLM/NSP head), which are not part of the backbone: the family
  row names them.
- Only safetensors weights are read, and `trust_remote_code` is always off: loading never runs code from a file.
- Layer `l` is the output of block `l` (HF `hidden_states[l + 1]`). Requested layers are kept by forward hooks on
  the blocks, so the full `hidden_states` tuple is never built; the last layer is `last_hidden_state`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from lead_dist.models.families import Family, family_of

logger = logging.getLogger(__name__)


class BackboneWeightsError(ValueError):
    """A checkpoint's weights do not match the backbone it should fill (strict loading)."""


def family_for(config: PretrainedConfig) -> Family:
    """The family row of a backbone config; a clear error for architectures lead_dist does not handle."""
    return family_of(getattr(config, "model_type", None))


def takes_token_types(config: PretrainedConfig) -> bool:
    """Whether the backbone has segment embeddings: its family has them and the config gives them a vocabulary
    (DeBERTa-v3 checkpoints set type_vocab_size to 0: the ids would be ignored)."""
    return family_for(config).token_types and int(getattr(config, "type_vocab_size", 1)) > 0


def max_tokens(config: PretrainedConfig) -> int:
    """The most tokens one text may have: the position embeddings, less the ids RoBERTa-style families skip (their
    positions start after the padding id: 514 embeddings hold 512 tokens)."""
    positions = int(getattr(config, "max_position_embeddings", 512))
    if family_for(config).positions_after_padding:
        positions -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def _constructor_kwargs(family: Family) -> dict[str, object]:
    return {"add_pooling_layer": False} if family.has_pooler else {}


def _loading_kwargs(family: Family) -> dict[str, object]:
    kwargs = _constructor_kwargs(family)
    if family.attn_implementation is not None:
        kwargs["attn_implementation"] = family.attn_implementation
    return kwargs


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
    family = family_for(config)
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
            **_loading_kwargs(family),
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = f"{model.base_model_prefix}."
    unexpected, ignored = [], []
    for key in sorted(info.get("unexpected_keys", ())):
        bare = key[len(prefix) :] if key.startswith(prefix) else key
        (ignored if bare.startswith(family.ignorable_prefixes) else unexpected).append(key)
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
    family = family_for(config)
    config = copy.deepcopy(config)
    if family.attn_implementation is not None:
        config._attn_implementation = family.attn_implementation
    model_class = AutoModel._model_mapping[type(config)]
    return model_class(config, **_constructor_kwargs(family))


def _module_at(root: nn.Module, path: str) -> nn.Module | None:
    module: nn.Module | None = root
    for name in path.split("."):
        module = getattr(module, name, None)
    return module


def blocks_of(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's list of transformer blocks."""
    module = _module_at(backbone, family_for(backbone.config).blocks)
    if not isinstance(module, nn.ModuleList):
        raise TypeError(f"{type(backbone).__name__}: expected a ModuleList of blocks, found {type(module).__name__}")
    return module


def depth_of(backbone: nn.Module) -> int:
    return len(blocks_of(backbone))


def truncated_copy(backbone: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """A deep copy of the backbone keeping only its first `num_layers` blocks, with its config updated (the depth
    and the family's per-block lists, e.g. ModernBERT's attention type of each block)."""
    depth = depth_of(backbone)
    if not 1 <= num_layers <= depth:
        raise ValueError(f"num_layers must be in 1..{depth} (the teacher's depth), got {num_layers}")
    student = copy.deepcopy(backbone)
    family = family_for(student.config)
    parent_path, _, attr = family.blocks.rpartition(".")
    parent = _module_at(student, parent_path) if parent_path else student
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:num_layers]))
    setattr(student.config, family.depth_key, num_layers)
    for key in family.per_layer_keys:
        values = getattr(student.config, key, None)
        if values is not None:
            setattr(student.config, key, list(values)[:num_layers])
    return student


def check_layers(layers: Sequence[int], depth: int) -> tuple[int, ...]:
    """Validate requested layer indices (0-based block outputs) against a depth."""
    chosen = tuple(int(layer) for layer in layers)
    bad = [layer for layer in chosen if not 0 <= layer < depth]
    if bad:
        raise ValueError(f"layers {bad} are out of range: this model has layers 0..{depth - 1}")
    return chosen


def _run_model(backbone: PreTrainedModel, inputs: dict[str, Tensor]) -> Tensor:
    return backbone(**inputs, output_hidden_states=False, return_dict=True).last_hidden_state


def _run_deberta(backbone: PreTrainedModel, inputs: dict[str, Tensor]) -> Tensor:
    """DeBERTa-v2's own forward collects every layer's states whatever it is asked (its encoder is always called
    with output_hidden_states=True); running its embeddings and encoder here, with the collection off, is the same
    computation (`z_steps`, the one other thing that forward does, is 0 in every transformers model)."""
    if int(getattr(backbone, "z_steps", 0)) > 1:
        raise ValueError(f"a DeBERTa-v2 backbone with z_steps={backbone.z_steps} is not supported")
    mask = inputs["attention_mask"]
    states = backbone.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids"), mask=mask)
    return backbone.encoder(states, mask, output_hidden_states=False, return_dict=True).last_hidden_state


_RUNNERS = {"model": _run_model, "deberta": _run_deberta}


def _capture_module(backbone: nn.Module, family: Family, blocks: nn.ModuleList, index: int) -> nn.Module:
    """The module whose output is layer `index` (a block, or what the family applies right after block 0)."""
    if index == 0 and family.after_first_block is not None:
        module = _module_at(backbone, family.after_first_block)
        if module is not None:
            return module
    return blocks[index]


def run_backbone(
    backbone: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    token_type_ids: Tensor | None,
    layers: Sequence[int],
) -> tuple[Tensor, list[Tensor]]:
    """Run the backbone; return the last layer's states [B, T, H] and the states of `layers`, in that order.

    Only the requested layers' outputs are kept (forward hooks), so memory does not grow with depth. The last layer
    is `last_hidden_state` itself: for families with a final norm after the blocks (ModernBERT) that is what
    `hidden_states[N]` holds too.
    """
    family = family_for(backbone.config)
    blocks = blocks_of(backbone)
    chosen = check_layers(layers, len(blocks))
    last = len(blocks) - 1
    captured: dict[int, Tensor] = {}

    def keeper(index: int):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            # Some block classes return a tuple whose first element is the hidden states.
            captured[index] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [
        _capture_module(backbone, family, blocks, index).register_forward_hook(keeper(index))
        for index in sorted(set(chosen) - {last})
    ]
    inputs: dict[str, Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        if not takes_token_types(backbone.config):
            raise ValueError(f"a {backbone.config.model_type} backbone takes no token_type_ids, but they were given")
        inputs["token_type_ids"] = token_type_ids
    try:
        states = _RUNNERS[family.runner](backbone, inputs)
    finally:
        for handle in handles:
            handle.remove()
    captured[last] = states
    return states, [captured[index] for index in chosen]


def stack_or_empty(tensors: list[Tensor], like: Tensor) -> Tensor:
    """Stack per-layer tensors into [K, ...]; an empty [0, ...] tensor shaped like `like` when K = 0."""
    if tensors:
        return torch.stack(tensors, dim=0)
    return like.new_empty((0, *like.shape))
