"""lead_dist: distributed LEAD distillation for dense retrieval."""

__version__ = "0.1.0"
