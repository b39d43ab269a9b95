"""What every model kind shares: the backbone, its own tokenizer, head bookkeeping and saving."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lead_dist.models.backbone import depth_of, family_for, takes_token_types
from lead_dist.models.folder import read_head, remove_kind_files, write_head, write_lead_config

logger = logging.getLogger(__name__)


def check_options(kind: str, given: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model kind {kind!r}; allowed: {list(allowed)}")


class RetrievalModel(nn.Module):
    """Base of DualEncoder, ColBERT and CrossEncoder (holds state, not scoring logic).

    Attributes: `kind`, `backbone`, `tokenizer`, `num_layers`, `hidden_size`, `fresh_parameters` (names of
    parameters initialised at random because the folder had no weights for them), `ignored_keys` (checkpoint keys
    outside the backbone that loading skipped, e.g. a pooler).
    """

    kind: str = ""

    def __init__(self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        family_for(backbone.config)  # refuse unsupported architectures at construction time
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.fresh_parameters: list[str] = []
        self.ignored_keys: list[str] = []

    @property
    def num_layers(self) -> int:
        return depth_of(self.backbone)

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def uses_token_types(self) -> bool:
        """Whether tokenization emits token_type_ids (the backbone has segment embeddings, the tokenizer uses them)."""
        return takes_token_types(self.backbone.config) and "token_type_ids" in self.tokenizer.model_input_names

    @property
    def options(self) -> dict[str, Any]:
        """The kind's options, as written to lead_dist.json."""
        return {}

    def head_state_dict(self) -> dict[str, Tensor]:
        """Parameters the kind adds on top of the backbone (stored in lead_head.safetensors)."""
        return {name: value for name, value in self.state_dict().items() if not name.startswith("backbone.")}

    def mark_head_fresh(self, reason: str) -> None:
        """Record (and log) that the head was initialised at random."""
        self.fresh_parameters = sorted(self.head_state_dict())
        if self.fresh_parameters:
            logger.warning("%s: %s; initialised fresh: %s", type(self).__name__, reason, self.fresh_parameters)

    def load_head(self, folder: Path) -> None:
        """Fill the head from the folder's lead_head.safetensors strictly, or initialise it fresh (reported)."""
        expected = self.head_state_dict()
        if not expected:
            return
        stored = read_head(folder)
        if stored is None:
            self.mark_head_fresh(f"{folder} has no lead_head.safetensors")
            return
        missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        wrong_shape = [k for k in expected if k in stored and stored[k].shape != expected[k].shape]
        if missing or unexpected or wrong_shape:
            raise ValueError(
                f"{folder / 'lead_head.safetensors'} does not match the {self.kind} head: missing {missing}, "
                f"unexpected {unexpected}, wrong shape {wrong_shape}"
            )
        self.load_state_dict(stored, strict=False)
        self.fresh_parameters = []

    def save(self, path: str | Path) -> None:
        """Write a folder that `load_model` reads back identically and transformers' AutoModel loads."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        remove_kind_files(folder)  # an earlier save of another kind must not leave its head or ST modules behind
        write_lead_config(folder, self.kind, self.options)
        write_head(folder, self.head_state_dict())
        self.save_extras(folder)

    def save_extras(self, folder: Path) -> None:
        """Kind-specific files (sentence-transformers modules for a DE)."""
