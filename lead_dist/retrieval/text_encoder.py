"""One face for every single-vector model that retrieval encodes with.

Two kinds of model folder are accepted:
- a lead_dist dual encoder (a folder with lead_dist.json, loaded by `lead_dist.models.load_model`), whose
  `tokenize_*` and `forward(...).final` define the representation;
- a plain transformers / sentence-transformers folder (e.g. the packaged all-MiniLM-L6-v2): pooling (mean or CLS)
  and normalisation come from `lead_dist.models.st_folder.read_sentence_transformers`, the strict parser
  `load_model` uses too; vectors are L2-normalised when `modules.json` lists a Normalize module, so inner product
  = the cosine the model was trained with. A bare transformers folder (no modules.json) pools the mean, unnormalised.

Every encoder knows its `max_seq_length`, the default query and passage length of every verb (sentence-transformers
encodes with it too): a lead_dist DE's option, a sentence-transformers folder's `max_seq_length`, else the position
embeddings the backbone has (`default_max_length`).

Every encoder carries a fingerprint (a hash of its weights and its pooling) that is stored with the embeddings, so
an index is never searched with vectors from another model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lead_dist.config.schema import POOLINGS
from lead_dist.models.tokenization import join_title


def model_fingerprint(module: nn.Module, extra: str = "") -> str:
    """sha256 over parameter names, shapes, dtypes and bytes (plus `extra`, e.g. the pooling): 16 hex digits."""
    digest = hashlib.sha256(extra.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        data = tensor.detach().cpu().contiguous()
        if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw 16-bit words
            data = data.view(torch.int16)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:16]


def default_max_length(backbone: nn.Module, tokenizer, declared: int | None = None) -> int:
    """A model's own token limit: `declared` (a sentence-transformers `max_seq_length`, a lead_dist DE option), else
    what the backbone's position embeddings hold (`models.backbone.max_tokens`: RoBERTa's 514 positions hold 512
    tokens), capped by the tokenizer's `model_max_length` when it states one."""
    if declared:
        return int(declared)
    from lead_dist.models.backbone import max_tokens

    positions = max_tokens(backbone.config)
    stated = getattr(tokenizer, "model_max_length", None)
    return min(positions, int(stated)) if isinstance(stated, int) and 0 < stated < 1_000_000 else positions


class TextEncoder:
    """Tokenize queries/passages to padded tensors and embed token batches into [B, D] vectors."""

    model: nn.Module
    dim: int
    max_seq_length: int
    fingerprint: str
    pad_token_id: int
    padding_side: str = "right"

    def tokenize_queries(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def tokenize_passages(
        self, titles: Sequence[str], texts: Sequence[str], max_length: int
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> TextEncoder:
        self.model.to(device)
        return self


class HFTextEncoder(TextEncoder):
    """A transformers backbone with sentence-transformers pooling: mean (masked) or CLS, optional L2 norm."""

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer,
        pooling: str = "mean",
        normalize: bool = True,
        max_seq_length: int | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = backbone.eval()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.dim = int(backbone.config.hidden_size)
        self.max_seq_length = default_max_length(backbone, tokenizer, max_seq_length)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.padding_side = tokenizer.padding_side
        self.fingerprint = model_fingerprint(backbone, f"hf:{pooling}:{normalize}")

    def _tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        )

    def tokenize_queries(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return self._tokenize(texts, max_length)

    def tokenize_passages(
        self, titles: Sequence[str], texts: Sequence[str], max_length: int
    ) -> dict[str, torch.Tensor]:
        # BEIR's sentence-transformers convention, shared with lead_dist's DE: "title text"
        return self._tokenize(join_title(titles, texts), max_length)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        states = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = pooled.float()
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


class LeadTextEncoder(TextEncoder):
    """A lead_dist dual encoder: its own tokenization and its final representation (already normalised for cos)."""

    def __init__(self, model: nn.Module) -> None:
        kind = getattr(model, "kind", None)
        if kind != "de":
            raise ValueError(
                f"retrieval encodes single-vector dual encoders only; this model's kind is {kind!r} "
                "(a ColBERT or cross-encoder teacher cannot build a dense index)"
            )
        self.model = model.eval()
        self.dim = int(model.hidden_size)
        tokenizer = model.tokenizer
        self.max_seq_length = default_max_length(model.backbone, tokenizer, getattr(model, "max_seq_length", None))
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.padding_side = tokenizer.padding_side
        self.fingerprint = model_fingerprint(model, f"lead:{type(model).__name__}")

    def tokenize_queries(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        return dict(self.model.tokenize_queries(list(texts), max_length))

    def tokenize_passages(
        self, titles: Sequence[str], texts: Sequence[str], max_length: int
    ) -> dict[str, torch.Tensor]:
        return dict(self.model.tokenize_passages(list(titles), list(texts), max_length))

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**batch).final.float()


def as_text_encoder(model: nn.Module | TextEncoder) -> TextEncoder:
    """Wrap an in-memory model (a lead_dist DE, or already a TextEncoder) for encoding."""
    if isinstance(model, TextEncoder):
        return model
    return LeadTextEncoder(model)


def load_text_encoder(path: str | Path, device: str | torch.device | None = None) -> TextEncoder:
    """Load a lead_dist model folder or a plain (sentence-)transformers folder as a TextEncoder."""
    from lead_dist.models.folder import resolve_folder

    folder = resolve_folder(path)  # a local folder, a pip-packaged model's hub id, or a hub id when online
    if (folder / "lead_dist.json").exists():
        from lead_dist.models import load_model

        encoder: TextEncoder = LeadTextEncoder(load_model(str(folder)))
    else:
        # the strict loader: no randomly initialised pooler (it would change the fingerprint on every load)
        from lead_dist.models.backbone import load_backbone, load_tokenizer
        from lead_dist.models.st_folder import read_sentence_transformers

        # the one strict parser (shared with load_model); a bare transformers folder: mean pooling, no norm
        options = read_sentence_transformers(folder) or {"pooling": "mean", "similarity": "dot"}
        pooling, normalize = options["pooling"], options["similarity"] == "cos"
        backbone, _ignored = load_backbone(folder)
        encoder = HFTextEncoder(
            backbone.eval(), load_tokenizer(folder), pooling, normalize, options.get("max_seq_length")
        )
    if device is not None:
        encoder.to(device)
    return encoder
