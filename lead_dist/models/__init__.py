"""Retrieval models: dual encoder, ColBERT-style late interaction and cross encoder on a shared backbone.

See docs/INTERFACES.md for the contract and LEAD_SPEC section 2 for the scores.
"""

from __future__ import annotations

from lead_dist.models.backbone import BackboneWeightsError
from lead_dist.models.base import RetrievalModel
from lead_dist.models.colbert import ColBERT
from lead_dist.models.cross_encoder import CrossEncoder
from lead_dist.models.dual_encoder import DualEncoder
from lead_dist.models.factory import load_model, model_from_config, student_from_teacher
from lead_dist.models.families import FAMILIES, Family
from lead_dist.models.reps import Reps

__all__ = [
    "FAMILIES",
    "BackboneWeightsError",
    "ColBERT",
    "CrossEncoder",
    "DualEncoder",
    "Family",
    "Reps",
    "RetrievalModel",
    "load_model",
    "model_from_config",
    "student_from_teacher",
]
