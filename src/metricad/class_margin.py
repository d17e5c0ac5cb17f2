"""The classifier's view of an embedding, from the class centres a CosFace/ArcFace loss learned in training.

``margin = max over the other classes of cos(e, w_c) - cos(e, w_normal)``: higher = less like the normal class
than like some other one. The k-NN distance to the anchors sees what is new to every class; the margin sees
what resembles a reference class (a shirt among t-shirts). The default score adds the margin to the distance
where it is above the anchors' (``Detector`` with ``score="knn+excess-margin"``), a choice made on the
validation suite (BENCHMARKS.md section 2d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_centres(loss: torch.nn.Module) -> torch.Tensor | None:
    """The ``(D, classes)`` class centres of a trained ``build_loss`` module (CosFace, ArcFace), or None."""
    return getattr(getattr(loss, "loss", None), "W", None)


class ClassMargin:
    """``ClassMargin(centres, normal_label)(embeddings) -> (N,)`` margins; ``centres`` is ``(D, classes)``,
    as pytorch-metric-learning's CosFace/ArcFace store them (``loss.W``)."""

    def __init__(self, centres: torch.Tensor, normal_label: int):
        centres = torch.as_tensor(centres).detach().float()
        if centres.ndim != 2 or centres.shape[1] < 2:
            raise ValueError(f"class centres must be (embedding_dim, classes >= 2), got {tuple(centres.shape)}")
        if not 0 <= normal_label < centres.shape[1]:
            raise ValueError(f"normal_label {normal_label} is not one of the {centres.shape[1]} classes")
        self.centres, self.normal_label = centres, int(normal_label)
        self._unit_centres = F.normalize(centres, dim=0)

    @classmethod
    def from_loss(cls, loss: torch.nn.Module, normal_label: int) -> "ClassMargin":
        """The margin of a trained ``build_loss`` module that has class centres (CosFace, ArcFace)."""
        centres = class_centres(loss)
        if centres is None:
            raise ValueError(f"the margin needs a loss with class centres (cosface or arcface), not "
                             f"{type(getattr(loss, 'loss', loss)).__name__}")
        return cls(centres, normal_label)

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self._unit_centres.device != embeddings.device:  # moved once, not on every scored batch
            self._unit_centres = self._unit_centres.to(embeddings.device)
        cosines = F.normalize(embeddings, dim=1) @ self._unit_centres
        others = torch.cat([cosines[:, :self.normal_label], cosines[:, self.normal_label + 1:]], 1)
        return others.max(1).values - cosines[:, self.normal_label]
