"""The anomaly detector: trained embedding model(s), their normal anchors, and the experts that score against them.

An estimator in the manner of scikit-learn's ``LocalOutlierFactor``: ``__init__`` stores parameters only, ``fit``
learns, fitted attributes end in ``_``, and ``get_params``/``set_params`` (scikit-learn's ``BaseEstimator``) make
``sklearn.base.clone`` work. Sign convention, everywhere in metricad: **higher score = more anomalous**;
``decision_function = score_samples - offset_`` is positive for anomalies and ``predict`` returns 1 for an
anomaly, 0 for a normal image (scikit-learn's outlier detectors use the opposite signs; PyOD and anomalib this one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from sklearn.base import BaseEstimator

from metricad.localization import require_map
from metricad.preprocessing import to_model_array, to_model_input
from metricad.recipe import ANCHOR_SAMPLINGS, PRESETS, RUNTIMES
from metricad.scoring.experts import EXPERT_CLASSES, MAP_DIM, build_expert
from metricad.scoring.experts.patch import BANK_SIZE
from metricad.scoring.graph import ScoringGraph, fit_experts
from metricad.scoring.spec import ScoreSpec
from metricad.thresholds import calibrated, defect_masks, is_anomalous, normalized_score, threshold_for


def as_device(device=None) -> torch.device:
    """``device``, or CUDA when there is one, else the CPU."""
    return torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")


# Input pixels per embedding batch while fitting (~40 images at 320x320): large images' first feature maps would
# otherwise take gigabytes (512 images at 320x320 held 10 GB).
FIT_BATCH_PIXELS = 1 << 22


class NotFittedError(RuntimeError):
    """A fitted attribute was asked of a detector that was never fitted."""


class Detector(BaseEstimator):
    """Scikit-learn-style anomaly detector on trained embedding models.

    Parameters
    ----------
    model : an embedding model (``metricad.models``), or a list of them (an ensemble: their scores are averaged).
    score : expert names joined by "+" (``metricad.scoring.spec``); each expert is z-scored on normal images and
        the z-scores averaged. The default is the default preset's.
    k : the k-NN experts average the distances to the k nearest anchors (the original used k=1).
    n_anchors, anchor_sampling : keep n_anchors of the normal images as anchors (None: all), the ``"first"`` ones
        (as the original did), a ``"random"`` seeded subset, or a ``"coreset"`` (greedy k-center on the first
        model's embeddings, PatchCore's: fewer anchors that still cover the normal images).
    contamination : expected fraction of anomalies among normal-looking data; ``offset_`` is the
        ``1 - contamination`` quantile of the normal images' scores (held-out ones, else the anchors' leave-one-out).
    pixel_contamination : the share of normal map values above the pixel threshold ``pixel_offset_``; apart from
        ``contamination``, so that flagging more images does not also widen every defect mask.
    random_state : seed of the random anchor subset and of the experts' own randomness (projection, PCA, flow).
    fmap_dim, bank_size : the feature-map expert's projected dimension; the patch expert's bank size (a coreset).
    index : the k-NN index, ``"exact"`` (torch) or ``"faiss-flat"``, ``"faiss-ivf"``, ``"faiss-hnsw"`` for large banks.
    runtime : ``"torch"``, or ``"onnx"``: the graph's ONNX export on ONNX Runtime (faster on a CPU; exact index).
    batch_size, device : scoring batch size; torch device (CUDA if any)."""

    def __init__(self, model, score: str = PRESETS["default"].score, k: int = 1, n_anchors: int | None = None,
                 anchor_sampling: str = "first", contamination: float = 0.01, random_state: int = 0,
                 fmap_dim: int = MAP_DIM, index: str = "exact", runtime: str = "torch", batch_size: int = 512,
                 device=None, bank_size: int = BANK_SIZE, pixel_contamination: float = 0.01):
        self.model = model
        self.score = score
        self.k = k
        self.n_anchors = n_anchors
        self.anchor_sampling = anchor_sampling
        self.contamination = contamination
        self.random_state = random_state
        self.fmap_dim = fmap_dim
        self.index = index
        self.runtime = runtime
        self.batch_size = batch_size
        self.device = device
        self.bank_size = bank_size
        self.pixel_contamination = pixel_contamination

    # ---- learning -------------------------------------------------------------------------------------------
    @property
    def models(self) -> list[nn.Module]:
        return list(self.model) if isinstance(self.model, (list, tuple, nn.ModuleList)) else [self.model]

    @property
    def expert_params(self) -> dict:
        """What the experts are built with (``scoring.experts.build_expert``)."""
        return {"k": self.k, "fmap_dim": self.fmap_dim, "seed": self.random_state, "index": self.index,
                "bank_size": self.bank_size}

    def _check_params(self, n_images: int, held_out: bool = True) -> None:
        """Check the parameters (``held_out``: normal images held out), and parse the score once: ``score_spec_``."""
        self.score_spec_ = spec = ScoreSpec.parse(self.score)
        learned = [key for key in spec.keys if EXPERT_CLASSES[key].needs_held_out]
        if learned and not held_out:
            raise ValueError(f"the {learned[0]} expert learns on the anchors, so their own scores are biased low: "
                             "hold out good images to normalise it on (--holdout, 0.1 by default for folders)")
        for name in ("k", "bank_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.anchor_sampling not in ANCHOR_SAMPLINGS:
            raise ValueError(f"anchor_sampling must be 'first', 'random' or 'coreset', got {self.anchor_sampling!r}")
        if self.n_anchors is not None and not 1 <= self.n_anchors <= n_images:
            raise ValueError(f"n_anchors must be between 1 and the {n_images} normal images, got {self.n_anchors}")
        for name in ("contamination", "pixel_contamination"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {getattr(self, name)}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.runtime == "onnx" and self.index != "exact":
            raise ValueError(f"runtime 'onnx' runs the whole scoring graph, k-NN included, and needs the exact "
                             f"index; score a {self.index!r} index with runtime 'torch'")
        if not self.models or not all(isinstance(m, nn.Module) for m in self.models):
            raise ValueError("model must be an embedding model (metricad.models) or a list of them")
        if spec.needs_centres and any(getattr(m, "class_centres", None) is None for m in self.models):
            raise ValueError(f"score {self.score!r}: the margin experts need models trained with class centres (a "
                             "cosface or arcface loss); score these models by knn, fmap or pca instead")

    def select_anchors(self, normal_images: np.ndarray) -> np.ndarray:
        """Indices of the normal images kept as anchors."""
        n_images = len(normal_images)
        n = n_images if self.n_anchors is None else self.n_anchors
        if self.anchor_sampling == "first" or n == n_images:
            return np.arange(n)
        if self.anchor_sampling == "coreset":
            from metricad.scoring.coreset import k_center

            model, x = self.models[0].to(self.device_).eval(), self.model_input(normal_images)
            with torch.no_grad():
                embeddings = torch.cat([model(x[i:i + self.batch_size].to(self.device_))
                                        for i in range(0, len(x), self.batch_size)])
            return k_center(embeddings, n, self.random_state)
        return np.sort(np.random.default_rng(self.random_state).choice(n_images, size=n, replace=False))

    def fit(self, normal_images, holdout_images=None) -> "Detector":
        """Memorise (a selection of) ``normal_images`` as anchors and fit every expert on them. The experts are
        normalised, and ``offset_`` set, on ``holdout_images`` (normal images kept out of training and anchors)
        when given, else on the anchors themselves, each left out of its own k-NN search."""
        normal_images, held = np.asarray(normal_images), holdout_images is not None and len(holdout_images) > 0
        self._check_params(len(normal_images), held)
        self.device_ = as_device(self.device)
        self.normal_images_ = normal_images
        self.anchor_indices_ = self.select_anchors(normal_images)
        spec = self.score_spec_
        x = self.model_input(normal_images[self.anchor_indices_])
        batch = max(1, min(self.batch_size, FIT_BATCH_PIXELS // int(x.shape[2] * x.shape[3])))
        fitted = [fit_experts(model, {key: build_expert(key, **self.expert_params) for key in spec.keys}, x, batch,
                              self.device_) for model in self.models]
        self.graph_ = ScoringGraph.assemble(self.models, fitted, spec).to(self.device_).eval()
        self.holdout_images_ = np.asarray(holdout_images) if held else None
        self.normal_parts_ = self._normal_parts()
        self.graph_.combiner.fit(self.normal_parts_.to(self.device_))
        self._start_runtime()
        self._set_normal_threshold()
        self._set_pixel_threshold()
        return self

    def _normal_parts(self) -> torch.Tensor:
        """Raw expert scores ``(N, members * experts)`` of the normal images the experts are normalised on: the
        held-out ones, else the anchors, each left out of its own search."""
        if self.holdout_images_ is not None:
            return torch.from_numpy(self._run_torch(self.holdout_images_)[1])
        return torch.cat([member.anchor_scores().cpu() for member in self.graph_.members], 1)

    @torch.no_grad()
    def normal_scores(self) -> np.ndarray:  # of the normal images the experts were normalised on, not scored again
        return self.graph_.combiner(self.normal_parts_.to(self.device_)).cpu().numpy()

    def _set_normal_threshold(self) -> None:
        """``offset_``: the ``1 - contamination`` quantile of the normal images' scores."""
        normal_scores = self.normal_scores()
        if self.holdout_images_ is not None:
            self.offset_ = threshold_for(normal_scores, np.zeros(len(normal_scores)), "contamination",
                                         contamination=self.contamination)
            self.threshold_set_on_ = {"mode": "contamination", "contamination": self.contamination,
                               "n_normal": len(normal_scores), "images": "held-out normal images"}
        else:  # the anchors' own leave-one-out scores
            self.offset_ = float(np.quantile(normal_scores, 1.0 - self.contamination))
            self.threshold_set_on_ = {"mode": "leave-one-out", "contamination": self.contamination}

    def _set_pixel_threshold(self) -> None:
        """``pixel_offset_``: the ``1 - pixel_contamination`` quantile of normal map values (held-out images, else the
        anchors left out of their own search; every 2nd row, column): masks are gated by the image decision, so
        it bounds the marked share of a normal area, not normal maxima (docs/decisions.md). None without maps."""
        self.pixel_offset_ = self.pixel_threshold_set_on_ = None
        if not self.graph_.has_map:
            return
        with torch.no_grad():
            if self.holdout_images_ is not None:
                held = self.holdout_images_
                values = np.concatenate([self._run_torch(held[i:i + 64], maps=True)[2][:, ::2, ::2].ravel()
                                         for i in range(0, len(held), 64)])
                images = "held-out normal images"
            else:
                values = self.graph_.anchor_map_values(self.input_spec[1]).cpu().numpy()
                images = "anchors, each left out of its own search"
        self.pixel_offset_ = threshold_for(values, np.zeros(len(values)), "contamination",
                                           contamination=self.pixel_contamination)
        self.pixel_threshold_set_on_ = {"mode": "contamination", "contamination": self.pixel_contamination,
                                        "statistic": "map values (every 2nd row, column)",
                                        "n_pixels": int(len(values)), "images": images}

    @classmethod
    def from_fitted(cls, params: dict, graph: ScoringGraph, normal_images, anchor_indices, holdout_images,
                    normal_parts: torch.Tensor, offset: float | None = None, threshold_set_on: dict | None = None,
                    selection: dict | None = None, pixel_offset: float | None = None,
                    pixel_threshold_set_on: dict | None = None) -> "Detector":
        """A fitted detector from what fitting learns (a run's saved state, or a detector scored another way):
        nothing is embedded or fitted again. Without ``offset``, the threshold is set on ``normal_parts``; without
        ``pixel_offset`` (a run saved before maps), the pixel threshold is set as ``fit`` sets it."""
        detector = cls(**params)
        detector._check_params(len(normal_images))
        detector.device_ = as_device(detector.device)
        detector.normal_images_, detector.anchor_indices_ = np.asarray(normal_images), np.asarray(anchor_indices)
        detector.holdout_images_ = holdout_images
        detector.graph_, detector.normal_parts_ = graph.to(detector.device_).eval(), normal_parts
        detector._start_runtime()
        if offset is None:
            detector._set_normal_threshold()
        else:
            detector.offset_, detector.threshold_set_on_ = float(offset), dict(threshold_set_on)
        if pixel_offset is None:
            detector._set_pixel_threshold()
        else:
            detector.pixel_offset_, detector.pixel_threshold_set_on_ = float(pixel_offset), pixel_threshold_set_on
        if selection is not None:
            detector.selection_ = selection
        return detector

    @property
    def anchor_images_(self) -> np.ndarray:
        self._check_fitted()
        return self.normal_images_[self.anchor_indices_]

    def refit(self, **params) -> "Detector":
        """A new detector with ``params`` changed, fitted on this one's normal (and held-out) images: the models
        are shared, nothing is trained. E.g. ``refit(score="knn")``, ``refit(n_anchors=500)``."""
        self._check_fitted()
        derived = type(self)(**(self.get_params() | params))
        return derived.fit(self.normal_images_, self.holdout_images_)

    def with_score(self, score: str) -> "Detector":
        """This detector scored by ``score``. Experts this one has already fitted are shared and keep their
        normalisation (no image is embedded again); a score needing another expert refits."""
        self._check_fitted()
        spec, members = ScoreSpec.parse(score), self.graph_.members
        fitted = list(members[0].experts)
        if not set(spec.keys) <= set(fitted):
            return self.refit(score=score)
        columns = spec.columns(fitted, len(members))
        graph = ScoringGraph.assemble([member.model for member in members],
                                      [dict(member.experts) for member in members], spec,
                                      self.graph_.combiner.subset(columns, list(spec.one_sided) * len(members)),
                                      self.graph_.map_smoothing)
        return type(self).from_fitted(self.get_params() | {"score": score}, graph, self.normal_images_,
                                      self.anchor_indices_, self.holdout_images_, self.normal_parts_[:, columns])

    # ---- scoring --------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "graph_"):
            raise NotFittedError("this Detector is not fitted yet: call fit(normal_images) or open a run "
                                 "(metricad.run.open_run)")

    @property
    def input_spec(self) -> tuple[int, tuple[int, int]]:
        model = self.models[0]
        return model.in_channels, tuple(model.input_size)

    def model_input(self, images) -> torch.Tensor:
        """``images`` as the models take them: float32 ``(N, C, H, W)`` in [0, 1], checked against the input spec."""
        return to_model_input(images, *self.input_spec)

    def _start_runtime(self) -> None:
        self.session_ = None
        if self.runtime == "onnx":
            from metricad.scoring.onnx_graph import OnnxScorer

            self.session_ = OnnxScorer(self.graph_, self.input_spec, use_cuda=self.device_.type == "cuda")

    @property
    def _scoring_batch(self) -> int:  # batch_size, fewer where the patch expert's distance matrix needs it
        return min(self.batch_size, self.graph_.max_batch)

    def _run_torch(self, images, maps: bool = False) -> tuple[np.ndarray, ...]:
        return self.graph_.score_batches(self.model_input(images), self._scoring_batch, self.device_, maps)

    def score_parts(self, images) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (N,), parts (N, members * experts))``: the score and every expert's raw score."""
        self._check_fitted()
        if self.session_ is None:
            return self._run_torch(images)
        return self.session_(to_model_array(images, *self.input_spec), self._scoring_batch)

    @property
    def has_map(self) -> bool:
        self._check_fitted()
        return self.graph_.has_map

    def score_with_maps(self, images) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (N,), anomaly maps (N, H, W))`` at the model input's resolution, from one pass: each position's
        patch-expert z-score, smoothed (``metricad.scoring.maps``). A score with no patch-level expert has none."""
        self._check_fitted()
        require_map(self)
        if self.session_ is None:
            scores, _, maps = self._run_torch(images, maps=True)
            return scores, maps
        scores, _, maps = self.session_(to_model_array(images, *self.input_spec), self._scoring_batch, maps=True)
        return scores, maps

    def predict_masks(self, scores, maps) -> np.ndarray:
        """Boolean defect masks ``(N, H, W)``: where the map is above ``pixel_offset_``, in images flagged by the
        image threshold (``metricad.thresholds.defect_masks``)."""
        self._check_fitted()
        return defect_masks(scores, maps, self.offset_, self.pixel_offset_)

    def score_samples(self, images) -> np.ndarray:
        """Anomaly score of each image, higher = more anomalous: the mean over experts (and ensemble members) of
        each expert's score z-scored on normal images, one-sided experts counted only above normal."""
        return self.score_parts(images)[0]

    def decision_function(self, images) -> np.ndarray:
        """``score_samples - offset_``: positive means anomalous."""
        return self.score_samples(images) - self.offset_

    def predict(self, images) -> np.ndarray:
        """1 for an anomaly, 0 for a normal image."""
        return self.predict_scores(self.score_samples(images))

    def predict_scores(self, scores) -> np.ndarray:
        """``predict`` for scores already computed (1 = anomaly): the one place a score meets the threshold."""
        self._check_fitted()
        return is_anomalous(scores, self.offset_).astype(np.int64)

    def normalized_score(self, scores) -> np.ndarray:
        """Scores mapped monotonically to (0, 1), 0.5 at the threshold: ``1 / (1 + exp(threshold - score))``."""
        self._check_fitted()
        return normalized_score(scores, self.offset_)

    # ---- threshold ------------------------------------------------------------------------------------------
    def calibrate(self, images, is_anomaly=None, mode: str = "contamination", contamination: float | None = None,
                  target_fpr: float = 0.01) -> "Detector":
        """Set the threshold ``offset_`` on images that are not anchors (held-out normals or a validation set) by
        ``mode``: contamination, fpr, tail or f1 (``metricad.thresholds``); ``threshold_set_on_`` records it."""
        self._check_fitted()
        contamination = self.contamination if contamination is None else contamination
        self.offset_, self.threshold_set_on_ = calibrated(self.score_samples(images), is_anomaly, mode,
                                                          contamination, target_fpr)
        return self
