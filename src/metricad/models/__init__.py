"""Embedding models behind a registry. Importing this package registers the built-in models."""

from metricad.models import compact_cnn, pretrained, seed_mobilenetv2  # noqa: F401  (registration side effect)
from metricad.models.registry import create_model, list_models, rebuild, register_model

__all__ = ["create_model", "list_models", "rebuild", "register_model"]
