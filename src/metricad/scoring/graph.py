"""The scoring graph: images -> every member model's experts -> one normalised, averaged score.

The same ``nn.Module`` scores in torch and is exported whole to ONNX (anchors, projections and normalisation
statistics become constants of the graph), so the two runtimes cannot drift apart.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from metricad.scoring.combine import ZScoreMean
from metricad.scoring.experts import Expert
from metricad.scoring.spec import ScoreSpec


class MemberScorer(nn.Module):
    """One trained model and its fitted experts: ``forward(x) -> (N, E)`` raw scores, in the experts' order."""

    def __init__(self, model: nn.Module, experts: dict[str, Expert]):
        super().__init__()
        self.model, self.experts = model, nn.ModuleDict(experts)

    def views(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.model.forward_views(x) if any(e.uses_model for e in self.experts.values()) else {}
        views["pixels"] = x
        return views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = self.views(x)
        return torch.stack([expert(views) for expert in self.experts.values()], 1)

    def vectors(self, x: torch.Tensor) -> list[torch.Tensor]:
        views = self.views(x)
        return [expert.vectors(views) for expert in self.experts.values()]

    def anchor_scores(self) -> torch.Tensor:
        return torch.stack([expert.anchor_scores() for expert in self.experts.values()], 1)


class ScoringGraph(nn.Module):
    """``forward(x) -> (score (N,), parts (N, members * experts))``: the raw expert scores of every member,
    z-scored and averaged by ``combiner``."""

    def __init__(self, members: list[MemberScorer], combiner: ZScoreMean):
        super().__init__()
        self.members, self.combiner = nn.ModuleList(members), combiner

    @classmethod
    def assemble(cls, models: list[nn.Module], experts: list[dict[str, Expert]], spec: ScoreSpec,
                 combiner: ZScoreMean | None = None) -> "ScoringGraph":
        """The one way a graph is built: each model with its fitted experts (by registry key; those ``spec`` reads
        are taken, in its order), and ``combiner`` (fitted statistics) or a new one to fit."""
        members = [MemberScorer(model.eval(), {key: fitted[key] for key in spec.keys})
                   for model, fitted in zip(models, experts)]
        return cls(members, combiner if combiner is not None else ZScoreMean(list(spec.one_sided) * len(members)))

    @property
    def max_batch(self) -> int:
        """The most images one forward pass should take (the patch expert's distance matrix bounds it)."""
        return min(expert.max_batch for member in self.members for expert in member.experts.values())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = torch.cat([member(x) for member in self.members], 1)
        return self.combiner(parts), parts
