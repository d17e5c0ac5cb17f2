"""Experts: each one piece of evidence that an image is anomalous (higher = more anomalous), fitted on the normal
images of one trained model.

An expert reads one view of an image (``views``: the model's ``embedding``, its ``local`` and last ``features``
maps, and the model input as ``pixels``), turns it into the vectors it compares (``vectors``), learns from the
anchors' vectors (``fit``) and scores (``forward``). ``anchor_scores`` gives each anchor's own score with itself
left out, to normalise on when no held-out normal images are given. Experts are ``nn.Module``s holding their
fitted state as buffers, so that one scoring graph runs them in torch and exports them to ONNX unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from metricad.index import knn_search, make_index

MAP_DIM = 64  # the feature-map expert's projection: kept two members in the scoring budget (decisions.md)
EXPERT_CLASSES: dict[str, type["Expert"]] = {}


def register_expert(key: str):
    """Class decorator: the expert that the score names reading ``key`` use (``scoring.spec.declare_expert``)."""
    def register(cls):
        cls.name = key
        EXPERT_CLASSES[key] = cls
        return cls
    return register


def build_expert(key: str, k: int = 1, fmap_dim: int = MAP_DIM, seed: int = 0, index: str = "exact") -> "Expert":
    """The unfitted expert registered as ``key`` (a ``ScoreSpec``'s keys: ``excess-margin`` reads ``margin``)."""
    if key not in EXPERT_CLASSES:
        raise ValueError(f"unknown expert {key!r}; registered: {', '.join(EXPERT_CLASSES)}")
    return EXPERT_CLASSES[key].from_params(k=k, fmap_dim=fmap_dim, seed=seed, index=index)


class Expert(nn.Module):
    name: str  # its registry key
    uses_model = True  # reads a view of the trained model (the pixel expert does not)
    state_keys: tuple[str, ...] = ()  # the fitted buffers that a run saves

    @classmethod
    def from_params(cls, k: int, fmap_dim: int, seed: int, index: str) -> "Expert":
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

    def fitted_state(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key) for key in self.state_keys}

    def load_fitted_state(self, state: dict[str, torch.Tensor]) -> "Expert":
        missing = [key for key in self.state_keys if key not in state]
        if missing:
            raise ValueError(f"the {self.name} expert's saved state lacks {', '.join(missing)}")
        for key in self.state_keys:
            setattr(self, key, state[key])
        return self


@register_expert("knn")
class KnnDistance(Expert):
    """Mean euclidean distance to the ``k`` nearest anchors' embeddings (the original's score, with k=1)."""

    state_keys = ("anchors",)

    @classmethod
    def from_params(cls, k, fmap_dim, seed, index):
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


@register_expert("fmap")
class FeatureMapKnn(KnnDistance):
    """k-NN on the mid-level and last feature maps, after PatchCore (Roth et al. 2022): the mid-level map pooled
    to the last map's grid, both averaged over each position's 3x3 neighbourhood and concatenated, flattened,
    then projected to ``dim`` values by a seeded Gaussian random projection (distances kept within a few percent,
    Johnson-Lindenstrauss) so that the anchors' memory and the k-NN cost stay bounded. The maps keep where each
    part of the object sits, which the pooled embedding compresses away."""

    state_keys = ("anchors", "projection")

    @classmethod
    def from_params(cls, k, fmap_dim, seed, index):
        return cls(k, fmap_dim, seed, index)

    def __init__(self, k: int = 1, dim: int = MAP_DIM, seed: int = 0, index: str = "exact"):
        super().__init__(k, index)
        self.dim, self.seed = dim, seed
        self.register_buffer("projection", None)

    def prepare(self, model):
        from sklearn.random_projection import GaussianRandomProjection

        with torch.no_grad():
            example = model.forward_views(torch.zeros(1, model.in_channels, *model.input_size,
                                                      device=next(model.parameters()).device))
        width = self._maps(example).shape[1]
        # sklearn draws the matrix (entries N(0, 1/dim)); fitting reads only the number of columns.
        projection = GaussianRandomProjection(self.dim, random_state=self.seed).fit(np.zeros((1, width)))
        self.projection = torch.as_tensor(projection.components_.T, dtype=torch.float32,
                                          device=example["features"].device).contiguous()

    @staticmethod
    def _maps(views) -> torch.Tensor:
        local, last = views["local"], views["features"]
        # Python ints, so that ONNX gets constant kernel sizes (a model's input size is fixed; only N varies).
        grid = (int(last.shape[2]), int(last.shape[3]))
        if int(local.shape[2]) % grid[0] == 0 and int(local.shape[3]) % grid[1] == 0:
            local = F.avg_pool2d(local, (int(local.shape[2]) // grid[0], int(local.shape[3]) // grid[1]))
        else:
            local = F.adaptive_avg_pool2d(local, grid)
        maps = torch.cat([local, last], 1)
        return F.avg_pool2d(maps, 3, stride=1, padding=1, count_include_pad=False).flatten(1)

    def vectors(self, views):
        return self._maps(views) @ self.projection


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


@register_expert("pca")
class PixelPCA(Expert):
    """Squared reconstruction error of the raw pixels from the normal images' principal components keeping
    ``variance`` of their variance: sees material where no normal image has any, whatever the network learned."""

    uses_model = False
    state_keys = ("mean", "components", "anchor_errors")

    def __init__(self, variance: float = 0.99):
        super().__init__()
        self.variance = variance
        for key in self.state_keys:
            self.register_buffer(key, None)

    def vectors(self, views):
        return views["pixels"].flatten(1)

    def fit(self, model, anchor_vectors):
        from sklearn.decomposition import PCA

        pca = PCA(self.variance, svd_solver="full").fit(anchor_vectors.cpu().numpy())
        device = anchor_vectors.device
        self.mean = torch.as_tensor(pca.mean_, dtype=torch.float32, device=device)
        self.components = torch.as_tensor(pca.components_, dtype=torch.float32, device=device).contiguous()
        with torch.no_grad():
            self.anchor_errors = self.error(anchor_vectors)
        return self

    def error(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.mean
        return (centred - (centred @ self.components.T) @ self.components).pow(2).sum(1)

    def forward(self, views):
        return self.error(self.vectors(views))

    def anchor_scores(self):
        return self.anchor_errors
