"""The scoring graph: images -> every member model's experts -> one normalised, averaged score, and, when an
expert is patch-level, the anomaly map at the model input's resolution (``metricad.scoring.maps``).

The same ``nn.Module`` scores in torch and is exported whole to ONNX (anchors, projections and normalisation
statistics become constants of the graph), so the two runtimes cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from metricad import distributed
from metricad.progress import progress
from metricad.scoring.combine import ZScoreMean
from metricad.scoring.experts import Expert
from metricad.scoring.maps import MapSmoothing
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
        return self.scores_and_maps(x)[0]

    def scores_and_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """``((N, E) raw scores, {expert's column: its raw (N, h, w) map})`` from one pass of the model."""
        views = self.views(x)
        scores, maps = [], {}
        for column, expert in enumerate(self.experts.values()):
            score, raw_map = expert.score_and_map(views)
            scores.append(score)
            if raw_map is not None:
                maps[column] = raw_map
        return torch.stack(scores, 1), maps

    def vectors(self, x: torch.Tensor) -> list[torch.Tensor]:
        views = self.views(x)
        return [expert.vectors(views) for expert in self.experts.values()]

    def anchor_scores(self) -> torch.Tensor:
        return torch.stack([expert.anchor_scores() for expert in self.experts.values()], 1)


def fit_experts(model: nn.Module, experts: dict[str, Expert], x: torch.Tensor, batch: int, device) -> dict:
    """``experts`` (unfitted, by registry key) fitted on the anchors ``x`` as ``model`` sees them, ``batch``
    images per pass on ``device``."""
    model = model.to(device).eval()
    member = MemberScorer(model, experts).to(device)
    with torch.no_grad():
        for expert in experts.values():
            expert.prepare(model)
        mine = x[distributed.shard(len(x))]  # under torchrun each rank embeds its shard; all gather them
        batches = [member.vectors(mine[i:i + batch].to(device))
                   for i in progress(range(0, len(mine), batch), "embedding the anchors")]
        for j, expert in enumerate(experts.values()):
            expert.fit(model, distributed.gather_rows(torch.cat([batch[j] for batch in batches])))
    return experts


class ScoringGraph(nn.Module):
    """``forward(x) -> (score (N,), parts (N, members * experts)[, anomaly_map (N, H, W)])``: the raw expert
    scores of every member, z-scored and averaged by ``combiner``; with a patch-level expert, also the map (its
    outputs are named by ``output_names``, as in the ONNX export)."""

    def __init__(self, members: list[MemberScorer], combiner: ZScoreMean, map_smoothing: MapSmoothing):
        super().__init__()
        self.members, self.combiner, self.map_smoothing = nn.ModuleList(members), combiner, map_smoothing

    @classmethod
    def assemble(cls, models: list[nn.Module], experts: list[dict[str, Expert]], spec: ScoreSpec,
                 combiner: ZScoreMean | None = None, map_smoothing: MapSmoothing | None = None) -> "ScoringGraph":
        """The one way a graph is built: each model with its fitted experts (by registry key; those ``spec`` reads
        are taken, in its order), ``combiner`` (fitted statistics) or a new one to fit, and ``map_smoothing`` (a
        run's own) or this version's default for the first model (where its map cells sit)."""
        members = [MemberScorer(model.eval(), {key: fitted[key] for key in spec.keys})
                   for model, fitted in zip(models, experts)]
        if map_smoothing is None:
            map_smoothing = MapSmoothing(aligned_cells=bool(getattr(models[0], "aligned_cells", False)))
        combiner = combiner if combiner is not None else ZScoreMean(list(spec.one_sided) * len(members))
        return cls(members, combiner, map_smoothing)

    @property
    def max_batch(self) -> int:
        """The most images one forward pass should take (the patch expert's distance matrix bounds it)."""
        return min(expert.max_batch for member in self.members for expert in member.experts.values())

    @property
    def has_map(self) -> bool:
        return any(expert.has_map for member in self.members for expert in member.experts.values())

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("score", "parts") + (("anomaly_map",) if self.has_map else ())

    def anomaly_map(self, raw_maps: dict[int, torch.Tensor], size) -> torch.Tensor:
        """``(N, H, W)``: each patch expert's raw map in its column's z-score units (as its image score counts in
        the combiner), averaged over experts and members, upsampled to ``size`` and smoothed."""
        z = [(raw - self.combiner.mean[column]) / self.combiner.std[column] for column, raw in raw_maps.items()]
        return self.map_smoothing(torch.stack(z).mean(0), size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts, raw_maps, offset = [], {}, 0
        for member in self.members:
            scores, maps = member.scores_and_maps(x)
            parts.append(scores)
            raw_maps |= {offset + column: m for column, m in maps.items()}
            offset += scores.shape[1]
        parts = torch.cat(parts, 1)
        if not raw_maps:
            return self.combiner(parts), parts
        return self.combiner(parts), parts, self.anomaly_map(raw_maps, x.shape[2:])

    def anchor_map_values(self, size, batch: int = 64) -> torch.Tensor:
        """The anchors' anomaly-map values (every second row and column), each anchor left out of its own search
        (to set the pixel threshold without held-out images); the maps are made ``batch`` images at a time."""
        raw_maps, offset = {}, 0
        for member in self.members:
            raw_maps |= {offset + column: expert.anchor_maps()
                         for column, expert in enumerate(member.experts.values()) if expert.has_map}
            offset += len(member.experts)
        n = len(next(iter(raw_maps.values())))
        return torch.cat([self.anomaly_map({c: m[i:i + batch] for c, m in raw_maps.items()}, size)[:, ::2, ::2]
                          .flatten() for i in range(0, n, batch)])

    def score_batches(self, x: torch.Tensor, batch: int, device, maps: bool = False) -> tuple[np.ndarray, ...]:
        """``(scores, parts[, maps])`` of model input ``x`` as numpy arrays, ``batch`` images per pass on
        ``device``."""
        outputs = [[] for _ in range(3 if maps else 2)]
        with torch.inference_mode():
            for i in progress(range(0, len(x), batch), "scoring", total=-(-len(x) // batch)):
                for kept, output in zip(outputs, self(x[i:i + batch].to(device))):
                    kept.append(output.cpu())
        if not outputs[0]:
            empty = (np.empty(0, np.float32), np.empty((0, self.combiner.mean.numel()), np.float32),
                     np.empty((0, *x.shape[2:]), np.float32))
            return empty[:len(outputs)]
        return tuple(torch.cat(kept).numpy() for kept in outputs)
