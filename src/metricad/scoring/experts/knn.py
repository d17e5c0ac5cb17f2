"""The k-NN distance of the embedding to the anchors' (the original's score)."""

from __future__ import annotations

import torch

from metricad.index import knn_search, make_index
from metricad.scoring.experts.base import Expert, register_expert


@register_expert("knn")
class KnnDistance(Expert):
    """Mean euclidean distance to the ``k`` nearest anchors' embeddings (the original's score, with k=1)."""

    state_keys = ("anchors",)

    @classmethod
    def from_params(cls, k=1, index="exact", **_):
        return cls(k, index)

    def __init__(self, k: int = 1, index: str = "exact"):
        super().__init__()
        self.k, self.index = k, index
        self.register_buffer("anchors", None)
        self.register_buffer("anchor_sq_norms", None, persistent=False)  # derived: computed once per fit/load
        self.search_index_ = None  # a faiss index, when ``index`` is not "exact"

    def vectors(self, views):
        return views["embedding"]

    def fit(self, model, anchor_vectors):
        self.anchors = anchor_vectors.detach().float().contiguous()
        if self.k >= len(self.anchors):
            raise ValueError(f"k={self.k} needs more than {self.k} anchors, got {len(self.anchors)}")
        return self._build_index()

    def load_fitted_state(self, state):
        super().load_fitted_state(state)
        return self._build_index(state.get("faiss_index"))

    def fitted_state(self):
        state = super().fitted_state()
        if self.search_index_ is not None:
            state["faiss_index"] = self.search_index_.serialize()
        return state

    def _build_index(self, serialized=None) -> "KnnDistance":
        self.anchor_sq_norms = self.anchors.pow(2).sum(1)
        self.search_index_ = None
        if self.index != "exact":
            self.search_index_ = make_index(self.index)
            if serialized is not None:
                self.search_index_.deserialize(serialized)
            else:
                self.search_index_.add(self.anchors)
        return self

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.search_index_ is not None:
            distances, indices = self.search_index_.search(queries, k)
            return distances.to(queries.device), indices.to(queries.device)
        return knn_search(self.anchors, queries, k, self.anchor_sq_norms)

    def forward(self, views):
        return self.search(self.vectors(views), self.k)[0].mean(1)

    def anchor_scores(self):
        """Each anchor's distance to its k nearest *other* anchors. The anchor is left out by its id, not by
        assuming it comes first: an approximate index (IVF, HNSW) may return it later, or not at all."""
        with torch.no_grad():
            distances, indices = self.search(self.anchors, self.k + 1)
        own = indices == torch.arange(len(indices), device=indices.device)[:, None]
        others = distances.masked_fill(own, float("inf")).sort(1).values[:, :self.k]
        return others.mean(1)
