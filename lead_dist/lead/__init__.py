"""LEAD, the method itself: layer selection and the loss. Pure tensor maths; imports no model, data or training."""

from __future__ import annotations

from lead_dist.lead.loss import contrastive_loss, kl_from_scores, layer_gaps, lead_loss
from lead_dist.lead.selection import STRATEGIES, LayerSchedule, select_layers

__all__ = [
    "STRATEGIES",
    "LayerSchedule",
    "contrastive_loss",
    "kl_from_scores",
    "layer_gaps",
    "lead_loss",
    "select_layers",
]
