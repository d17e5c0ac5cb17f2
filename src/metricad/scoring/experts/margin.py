"""The class margin of a loss with class centres (CosFace, ArcFace)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metricad.scoring.experts.base import Expert, register_expert


@register_expert("margin")
class ClassMargin(Expert):
    """``max over the other classes of cos(e, w_c) - cos(e, w_normal)`` with the class centres ``w`` of the
    model's CosFace/ArcFace loss: how much more the image resembles some reference class than the normal one.
    The k-NN distance sees what is new to every class; the margin sees a look-alike of a reference class."""

    state_keys = ("centres", "normal_label", "anchor_margins")

    def __init__(self):
        super().__init__()
        for key in self.state_keys:
            self.register_buffer(key, None)

    def vectors(self, views):
        return views["embedding"]

    def fit(self, model, anchor_vectors):
        if getattr(model, "class_centres", None) is None:
            raise ValueError("the margin experts need a model trained with class centres (a cosface or arcface "
                             "loss); score such a model by knn or fmap instead")
        self.centres = F.normalize(model.class_centres.detach().float(), dim=0)
        self.normal_label = torch.tensor(model.normal_label)
        with torch.no_grad():
            self.anchor_margins = self.margin(anchor_vectors.to(self.centres.device))
        return self

    def margin(self, embeddings: torch.Tensor) -> torch.Tensor:
        cosines = F.normalize(embeddings, dim=1) @ self.centres
        normal = int(self.normal_label)
        others = torch.cat([cosines[:, :normal], cosines[:, normal + 1:]], 1)
        return others.max(1).values - cosines[:, normal]

    def forward(self, views):
        return self.margin(self.vectors(views))

    def anchor_scores(self):
        return self.anchor_margins
