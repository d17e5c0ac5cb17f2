"""Losses by name: ``register_loss("name")`` on a builder adds one; ``build_loss("name", ...)`` makes it.

A builder takes ``(num_classes, embedding_dim, margin, normal_label)`` and returns ``module(embeddings, labels)
-> scalar``; a loss with weights (class centres, a classifier head) trains them with the model. Two facts travel
with the name: ``centres`` (it learns class centres, which the class-margin expert reads) and ``pairs`` (it
compares embeddings across the batch, so under torchrun it must see every rank's: ``metricad.losses.distributed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class LossEntry:
    build: Callable
    centres: bool = False
    pairs: bool = False


LOSSES: dict[str, LossEntry] = {}


def register_loss(name: str, centres: bool = False, pairs: bool = False):
    def register(build):
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = LossEntry(build, centres, pairs)
        return build
    return register


def loss_entry(name: str) -> LossEntry:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(LOSSES)}")
    return LOSSES[name]


def build_loss(name: str, num_classes: int, embedding_dim: int, margin: float = 0.2, normal_label: int | None = None):
    """The loss ``name`` for ``num_classes`` training labels and ``embedding_dim``-wide embeddings."""
    return loss_entry(name).build(num_classes, embedding_dim, margin, normal_label)
