"""Experts: each one piece of evidence that an image is anomalous (higher = more anomalous), fitted on the normal
images of one trained model.

An expert reads one view of an image (``views``: the model's ``embedding``, its ``local`` and last ``features``
maps, and the model input as ``pixels``), turns it into the vectors it compares (``vectors``), learns from the
anchors' vectors (``fit``) and scores (``forward``); a patch-level expert (``has_map``) also says where, as a
map of per-position raw scores (``score_and_map``). ``anchor_scores`` gives each anchor's own score with itself
left out, to normalise on when no held-out normal images are given. Experts are ``nn.Module``s holding their
fitted state as buffers, so that one scoring graph runs them in torch and exports them to ONNX unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn

MAP_DIM = 64  # the feature-map expert's projection: kept two members in the scoring budget (decisions.md)
EXPERT_CLASSES: dict[str, type["Expert"]] = {}


def register_expert(key: str):
    """Class decorator: the expert that the score names reading ``key`` use (``scoring.spec.declare_expert``)."""
    def register(cls):
        cls.name = key
        EXPERT_CLASSES[key] = cls
        return cls
    return register


def build_expert(key: str, **params) -> "Expert":
    """The unfitted expert registered as ``key`` (a ``ScoreSpec``'s keys: ``excess-margin`` reads ``margin``),
    for a detector's ``params`` (``k``, ``fmap_dim``, ``seed``, ``index``, ``bank_size``; each takes its own)."""
    if key not in EXPERT_CLASSES:
        raise ValueError(f"unknown expert {key!r}; registered: {', '.join(EXPERT_CLASSES)}")
    return EXPERT_CLASSES[key].from_params(**params)


class Expert(nn.Module):
    name: str  # its registry key
    uses_model = True  # reads a view of the trained model (the pixel expert does not)
    state_keys: tuple[str, ...] = ()  # the fitted buffers that a run saves

    max_batch = 1 << 30  # images per scoring batch its memory allows (the patch expert's bank sets one)
    has_map = False  # scores positions of the image, not only the whole image (``score_and_map``)
    needs_held_out = False  # learns on the anchors: normalised on held-out normal images only

    @classmethod
    def from_params(cls, **params) -> "Expert":
        """The expert for a detector's parameters (each expert takes the ones it uses)."""
        return cls()

    def prepare(self, model: nn.Module) -> None:
        """Set up what ``vectors`` needs from the model's shapes (before the anchors' vectors are computed)."""

    def vectors(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, model: nn.Module, anchor_vectors: torch.Tensor) -> "Expert":
        raise NotImplementedError

    def anchor_scores(self) -> torch.Tensor:
        raise NotImplementedError

    def score_and_map(self, views: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(scores (N,), map (N, h, w) or None)``: the image scores and, for a patch-level expert, the raw score
        of every position, from one pass (the image score is then the map's maximum)."""
        return self(views), None

    def anchor_maps(self) -> torch.Tensor:
        """A patch-level expert's maps of the anchors, each image left out of its own search, ``(N, h, w)``."""
        raise NotImplementedError

    def fitted_state(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key) for key in self.state_keys}

    def load_fitted_state(self, state: dict[str, torch.Tensor]) -> "Expert":
        missing = [key for key in self.state_keys if key not in state]
        if missing:
            raise ValueError(f"the {self.name} expert's saved state lacks {', '.join(missing)}")
        for key in self.state_keys:
            setattr(self, key, state[key])
        return self
