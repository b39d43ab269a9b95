"""The representation a dual encoder or ColBERT model hands to its score function."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Reps:
    """What `forward` returns for DE and CB models (see docs/INTERFACES.md).

    final:  DE [B, D] (L2-normalised when the similarity is cosine); CB [B, T, D'] projected if configured and
            L2-normalised.
    layers: DE [K, B, D]; CB [K, B, T, D] raw token states; K = number of requested layers, may be 0.
    mask:   CB [B, T] with 1 where a token counts in the score; None for DE.
    layer_scales: one factor per row of `layers`, for a DE whose intermediate layers are scored unlike its final
            vector (e.g. raw dot products under a cosine x 20 final score; its last block, when kept, is scored as
            the final vector, with `scale`); None = `scale` for every layer.
    scale:  the factor `score` multiplies similarities by (DE cosine models use e.g. 20; 1.0 otherwise). It travels
            with the representation so `score` stays a parameter-free static function; when rebuilding Reps after a
            gather, a chunk join or a cache read keep it and `layer_scales` (`dataclasses.replace(reps, final=...,
            layers=...)`): `score` refuses query and passage Reps whose scales differ.
    """

    final: Tensor
    layers: Tensor
    mask: Tensor | None = None
    scale: float = 1.0
    layer_scales: tuple[float, ...] | None = None
