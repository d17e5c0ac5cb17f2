"""A small registry of named embedding models (the timm pattern): ``create_model("name", **kwargs)``."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def decorator(factory):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory
    return decorator


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Every model maps ``(N, C, H, W)`` floats in [0, 1] to ``(N, embedding_dim)``."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = _MODELS[name](**kwargs)
    # The recipe to rebuild this model, saved beside its weights so a run directory describes itself.
    model.metricad_config = {"name": name, "kwargs": dict(kwargs)}
    if getattr(model, "weights_source", None) is not None:  # a pretrained model says which weights it started from
        model.metricad_config["kwargs"]["weights"] = model.weights_source
    return model
