"""A small registry of named embedding models (the timm pattern): ``create_model("name", **kwargs)``.

``@register_model("name")`` on an ``EmbeddingModel`` subclass gives it that name; the model then describes itself
(``model.recipe()``: its name and the arguments that build it again), which is what a run saves beside its weights
and ``rebuild`` reads back.
"""

from __future__ import annotations

import torch.nn as nn

_MODELS: dict[str, type] = {}


def register_model(name: str):
    def decorator(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        cls.registry_name = name
        _MODELS[name] = cls
        return cls
    return decorator


def list_models() -> list[str]:
    return sorted(_MODELS)


def _registered(name: str) -> type:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Every model maps ``(N, C, H, W)`` floats in [0, 1] to ``(N, embedding_dim)``."""
    return _registered(name)(**kwargs)


def rebuild(recipe: dict) -> nn.Module:
    """The model ``recipe`` (a saved ``model.recipe()``) describes, ready to take its saved weights: a pretrained
    backbone's starting weights are recorded, not read again."""
    return _registered(recipe["name"]).for_saved_weights(**recipe.get("kwargs", {}))
