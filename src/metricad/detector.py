"""The anomaly detector: a trained embedding plus its normal anchors, scored by k-NN distance (and, in
metricad's default, the class margin).

Sign convention, everywhere in metricad: **higher score = more anomalous**. ``score_samples`` returns the mean
euclidean distance to the k nearest anchors (``score="knn"``), or that distance plus the class margin, each
z-scored on the anchors (``score="knn+margin"``), or plus only the margin's excess over the anchors' mean
(``score="knn+excess-margin"``, metricad's default; see ``class_margin``);
``decision_function = score_samples - offset_`` is positive for anomalies; ``predict`` returns 1 for an anomaly
and 0 for a normal image. (scikit-learn's outlier detectors use the opposite sign for ``score_samples``;
anomaly-detection tools such as PyOD and anomalib use this one.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from metricad.class_margin import ClassMargin
from metricad.files import atomic_write, write_json
from metricad.index import make_index
from metricad.models import create_model
from metricad.preprocessing import to_model_array, to_model_input
from metricad.runtime import OnnxKnnScorer, make_embedder
from metricad.scores import MARGIN_SCORES, SCORES, combine

CONFIG_FILE, WEIGHTS_FILE, ANCHORS_FILE = "config.json", "weights.safetensors", "anchors.safetensors"
FUSED_ANCHOR_BYTES = 1 << 30


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class NotFittedError(RuntimeError):
    pass


class Detector:
    """Scikit-learn-style anomaly detector on top of an embedding model.

    Parameters
    ----------
    model : nn.Module mapping ``(N, C, H, W)`` floats in [0, 1] to ``(N, D)`` embeddings (see ``metricad.models``).
    k : score = mean distance to the k nearest anchors (the original used k=1).
    n_anchors : keep this many normal images as anchors (None: all of them).
    anchor_sampling : ``"first"`` (the first n_anchors, as the original did) or ``"random"`` (seeded subset).
    contamination : expected fraction of anomalies among normal-looking data; ``offset_`` is the
        ``1 - contamination`` quantile of the anchors' leave-one-out scores (each anchor scored against the others).
    random_state, batch_size, device : seed of the random subset; embedding batch size; torch device (CUDA if any).
    score : ``"knn"`` (the k-NN distance), ``"knn+margin"`` (the k-NN distance plus the class margin, each
        z-scored on the anchors) or ``"knn+excess-margin"`` (the z-scored margin added only where it is positive:
        the margin can make an image more suspect, never vouch for it). The margin scores need ``fit``'s
        ``ClassMargin`` of the model's training loss.
    runtime : ``"torch"`` runs the model itself; ``"onnx"`` runs its ONNX export on ONNX Runtime (faster on CPU).
    index : k-NN index, ``"exact"`` (torch) or ``"faiss-flat"``, ``"faiss-ivf"``, ``"faiss-hnsw"`` for large banks.
    """

    def __init__(self, model: nn.Module, k: int = 1, n_anchors: int | None = None, anchor_sampling: str = "first",
                 contamination: float = 0.01, random_state: int = 0, batch_size: int = 512, device=None,
                 runtime: str = "torch", index: str = "exact", score: str = "knn"):
        self.model = model
        self.score = score
        self.runtime = runtime
        self.index = index
        self.k = k
        self.n_anchors = n_anchors
        self.anchor_sampling = anchor_sampling
        self.contamination = contamination
        self.random_state = random_state
        self.batch_size = batch_size
        self.device = device

    # ---- learning -------------------------------------------------------------------------------------------
    def _check_params(self, n_images: int) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if self.anchor_sampling not in ("first", "random"):
            raise ValueError(f"anchor_sampling must be 'first' or 'random', got {self.anchor_sampling!r}")
        if self.n_anchors is not None and not 1 <= self.n_anchors <= n_images:
            raise ValueError(f"n_anchors must be between 1 and the {n_images} normal images, got {self.n_anchors}")
        if not 0.0 < self.contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {self.contamination}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")

    def select_anchors(self, n_images: int) -> np.ndarray:
        """Indices of the normal images kept as anchors."""
        n = n_images if self.n_anchors is None else self.n_anchors
        if self.anchor_sampling == "first":
            return np.arange(n)
        return np.sort(np.random.default_rng(self.random_state).choice(n_images, size=n, replace=False))

    def fit(self, normal_images, class_margin: ClassMargin | None = None) -> "Detector":
        """Embed the normal images (all, or the selected subset) and memorise them as anchors. ``class_margin``
        (``ClassMargin.from_loss`` of the training loss) is needed by the margin scores only."""
        normal_images = np.asarray(normal_images)
        self._check_params(len(normal_images))
        self._set_class_margin(class_margin)
        self._init_embedder()
        self.anchor_indices_ = self.select_anchors(len(normal_images))
        self.anchor_images_ = normal_images[self.anchor_indices_]
        self._set_anchor_embeddings(self.embed(self.anchor_images_))
        return self

    def _set_class_margin(self, class_margin: ClassMargin | None) -> None:
        if self.score in MARGIN_SCORES and class_margin is None:
            raise ValueError(f"score {self.score!r} needs the class margin of the model's training loss: "
                             "fit(images, class_margin=ClassMargin.from_loss(loss, normal_label))")
        self.class_margin_ = class_margin if self.score in MARGIN_SCORES else None

    def _init_embedder(self) -> None:
        self.device_ = torch.device(self.device) if self.device is not None else default_device()
        self.embedder_ = make_embedder(self.runtime, self.model, self.device_)

    def _set_anchor_embeddings(self, embeddings: torch.Tensor) -> None:
        """Index the anchors' embeddings; z-score statistics of each score part and the leave-one-out threshold."""
        self.anchor_embeddings_ = embeddings.to(self.device_)
        self.index_ = make_index(self.index, self.device_)
        self.index_.add(self.anchor_embeddings_)
        if self.k >= self.index_.ntotal:
            raise ValueError(f"k={self.k} needs more than {self.k} anchors, got {self.index_.ntotal}")
        # Leave-one-out: search k+1 and drop each anchor's own (zero) distance.
        dist, _ = self.index_.search(self.anchor_embeddings_, self.k + 1)
        parts = {"knn": dist[:, 1:].mean(1).cpu().numpy()}
        if self.class_margin_ is not None:
            parts["margin"] = self.class_margin_(self.anchor_embeddings_).cpu().numpy()
        # z-score statistics of every part on the anchors, so that no part of a sum dominates
        self.score_stats_ = {name: _mean_std(values) for name, values in parts.items()}
        self.offset_ = float(np.quantile(self._combine(parts), 1.0 - self.contamination))
        self.threshold_ = {"mode": "leave-one-out", "contamination": self.contamination}
        # ONNX runtime + exact index: embedding and k-NN fused into one ONNX Runtime call (the anchors become
        # constants of the graph, so only while they stay well under protobuf's 2 GB limit).
        self.scorer_ = None
        if self.runtime == "onnx" and self.index == "exact" and embeddings.numel() * 4 < FUSED_ANCHOR_BYTES:
            self.scorer_ = OnnxKnnScorer(self.model, embeddings, self.k, use_cuda=self.device_.type == "cuda",
                                         margin=self.class_margin_)

    def subset_anchors(self, n_anchors: int | None = None, anchor_sampling: str | None = None,
                       random_state: int | None = None) -> "Detector":
        """A fitted detector sharing this one's model, keeping a subset of its anchors (no re-embedding).

        Arguments left as None keep this detector's parameter. Used by the anchor-count sweep and by ``load``.
        """
        return self._derived(n_anchors=n_anchors, anchor_sampling=anchor_sampling, random_state=random_state)

    def with_score(self, score: str) -> "Detector":
        """A fitted detector sharing this one's model and anchors, scoring by ``score`` (no re-embedding); a
        margin score needs this detector's class margin. ``compare`` reports the default's parts this way."""
        return self._derived(score=score)

    def _derived(self, **changes) -> "Detector":
        self._check_fitted()
        params = self.get_params() | {k: v for k, v in changes.items() if v is not None}
        derived = Detector(self.model, batch_size=self.batch_size, device=self.device, runtime=self.runtime, **params)
        derived._check_params(len(self.anchor_images_))
        derived._set_class_margin(self.class_margin_)
        derived.device_, derived.embedder_ = self.device_, self.embedder_
        keep = derived.select_anchors(len(self.anchor_images_))
        derived.anchor_indices_ = self.anchor_indices_[keep]
        derived.anchor_images_ = self.anchor_images_[keep]
        derived._set_anchor_embeddings(self.anchor_embeddings_[torch.from_numpy(keep).to(self.device_)])
        return derived

    # ---- scoring --------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise NotFittedError("this Detector is not fitted yet: call fit(normal_images) or Detector.load(run_dir)")

    @property
    def input_spec(self) -> tuple[int, tuple[int, int]]:
        return self.model.in_channels, tuple(self.model.input_size)

    def embed(self, images) -> torch.Tensor:
        """Embeddings ``(N, D)`` (float32) of a uint8 or [0, 1] float batch, by the detector's runtime."""
        if not hasattr(self, "embedder_"):
            raise NotFittedError("this Detector is not fitted yet: call fit(normal_images) or Detector.load(run_dir)")
        x = to_model_input(images, *self.input_spec)
        out = [self.embedder_(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.model.embedding_dim)

    def score_embeddings(self, embeddings: torch.Tensor) -> np.ndarray:
        self._check_fitted()
        dist, _ = self.index_.search(embeddings, self.k)
        return self._score(dist, embeddings)

    def _score(self, knn_distances: torch.Tensor, embeddings: torch.Tensor) -> np.ndarray:
        """The score from the k nearest anchors' distances ``(N, k)`` (and the embeddings, for the margin)."""
        parts = {"knn": knn_distances.mean(1).cpu().numpy()}
        if self.class_margin_ is not None:
            parts["margin"] = self.class_margin_(embeddings.to(self.device_)).cpu().numpy()
        return self._combine(parts)

    def _combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """The score from its parts (``knn``, and ``margin`` for the margin scores), by ``scores.combine``."""
        return combine(self.score, parts, self.score_stats_)

    def score_samples(self, images) -> np.ndarray:
        """Anomaly score of each image (higher = more anomalous): the mean euclidean distance to its k nearest
        anchors, or, with the margin scores, that distance and the class margin, each z-scored on the anchors
        and summed."""
        self._check_fitted()
        if self.scorer_ is None:
            return self.score_embeddings(self.embed(images))
        x = to_model_array(images, *self.input_spec)
        outputs = [self.scorer_(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        if not outputs:
            return np.empty(0, dtype=np.float32)
        joined = lambda name: np.concatenate([out[name] for out in outputs])
        parts = {"knn": joined("distances").mean(1)}
        if "margins" in outputs[0]:
            parts["margin"] = joined("margins")
        return self._combine(parts)

    def decision_function(self, images) -> np.ndarray:
        """``score_samples - offset_``: positive means anomalous."""
        return self.score_samples(images) - self.offset_

    def predict(self, images) -> np.ndarray:
        """1 for an anomaly, 0 for a normal image."""
        return (self.decision_function(images) > 0).astype(np.int64)

    def set_threshold(self, threshold: float) -> "Detector":
        """Use an explicit score threshold (scores above it are anomalies)."""
        self._check_fitted()
        self.offset_ = float(threshold)
        self.threshold_ = {"mode": "manual"}
        return self

    def calibrate(self, images, is_anomaly=None, mode: str = "contamination", contamination: float | None = None,
                  target_fpr: float = 0.01) -> "Detector":
        """Set the threshold ``offset_`` on images that are not anchors (held-out normals or a validation set).

        mode ``"contamination"``: the ``1 - contamination`` quantile of the scores of the normal images (all of
        ``images`` when ``is_anomaly`` is None); ``"fpr"``: the lowest threshold whose false-positive rate on the
        normal images is at most ``target_fpr``; ``"f1"``: the threshold with the best F1 on labelled images
        (anomaly = positive class). ``threshold_`` records how it was set.
        """
        from metricad.thresholds import threshold_for

        self._check_fitted()
        scores = self.score_samples(images)
        labels = np.zeros(len(scores), np.int64) if is_anomaly is None else np.asarray(is_anomaly).astype(np.int64)
        if len(labels) != len(scores):
            raise ValueError(f"is_anomaly has {len(labels)} labels for {len(scores)} images")
        contamination = self.contamination if contamination is None else contamination
        self.offset_ = threshold_for(scores, labels, mode, contamination=contamination, target_fpr=target_fpr)
        self.threshold_ = {"mode": mode, "n_normal": int(np.sum(labels == 0)), "n_anomaly": int(np.sum(labels == 1))}
        self.threshold_.update({"contamination": contamination} if mode == "contamination" else
                               {"target_fpr": target_fpr} if mode == "fpr" else {})
        return self

    def explain(self, images, method: str = "feature-diff"):
        """Heat-maps of where each image differs from normal, with its score and nearest anchor (see
        ``metricad.explain`` for the methods). Runs the torch model whatever the runtime."""
        from metricad.explain import EXPLAIN_METHODS, Explanation, distance_gradcam, feature_difference

        if method not in EXPLAIN_METHODS:
            raise ValueError(f"method must be one of {', '.join(EXPLAIN_METHODS)}, got {method!r}")
        self._check_fitted()
        x = to_model_input(images, *self.input_spec).to(self.device_)
        model = self.model.to(self.device_).eval()
        with torch.inference_mode():
            embeddings = model(x)
        distances, indices = self.index_.search(embeddings, self.k)  # the score and the nearest anchor at once
        nearest = indices[:, 0].cpu()
        maps = []
        for i in range(0, len(x), self.batch_size):
            batch, idx = x[i:i + self.batch_size], nearest[i:i + self.batch_size]
            if method == "gradcam":
                maps.append(distance_gradcam(model, batch, self.anchor_embeddings_[idx.to(self.device_)]))
            else:
                anchors = to_model_input(self.anchor_images_[idx.numpy()], *self.input_spec).to(self.device_)
                maps.append(feature_difference(model, batch, anchors))
        heatmaps = torch.cat(maps) if maps else torch.empty(0, *self.input_spec[1])
        return Explanation(heatmaps.cpu().numpy(), self._score(distances, embeddings), nearest.numpy(),
                           distances[:, 0].cpu().numpy())

    def normalized_score(self, scores) -> np.ndarray:
        """Scores mapped monotonically to [0, 1) with the threshold at 0.5. A k-NN distance (>= 0):
        ``score / (score + threshold)``. A margin score (a sum of z-scores, any sign):
        ``1 / (1 + exp(threshold - score))``."""
        self._check_fitted()
        scores = np.asarray(scores, dtype=np.float64)
        if self.class_margin_ is not None:
            return 1.0 / (1.0 + np.exp(np.clip(self.offset_ - scores, -700, 700)))
        return scores / (scores + self.offset_) if self.offset_ > 0 else (scores > 0).astype(np.float64)

    # ---- persistence ----------------------------------------------------------------------------------------
    def get_params(self) -> dict:
        return {"k": self.k, "n_anchors": self.n_anchors, "anchor_sampling": self.anchor_sampling,
                "contamination": self.contamination, "random_state": self.random_state, "index": self.index,
                "score": self.score}

    def save(self, directory: str | os.PathLike, extra_config: dict | None = None) -> Path:
        """Write ``config.json``, ``weights.safetensors`` and ``anchors.safetensors`` (each file atomically)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = dict(extra_config or {})
        config["model"] = self.model.metricad_config
        config["detector"] = {**self.get_params(), "offset": self.offset_, "threshold": self.threshold_}
        if self.class_margin_ is not None:
            config["detector"]["normal_label"] = self.class_margin_.normal_label
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        anchors = {"embeddings": self.anchor_embeddings_.cpu().contiguous(),
                   "images": torch.from_numpy(np.ascontiguousarray(self.anchor_images_)),
                   "indices": torch.from_numpy(self.anchor_indices_.astype(np.int64)),
                   **({"class_centres": self.class_margin_.centres.cpu().contiguous()}
                      if self.class_margin_ is not None else {})}
        atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(weights, p))
        atomic_write(directory / ANCHORS_FILE, lambda p: save_file(anchors, p))
        write_json(directory / CONFIG_FILE, config)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, device=None, runtime: str = "torch", **overrides) -> "Detector":
        """Rebuild a saved detector from its files alone (safetensors + JSON: nothing is unpickled).

        ``overrides`` (``k``, ``n_anchors``, ``anchor_sampling``, ``random_state``, ``score``) re-select anchors
        from the saved ones or score them another way; the threshold is then recomputed.
        """
        directory = Path(directory)
        config = read_config(directory)
        model = build_model_from_config(config, directory)
        params = {k: v for k, v in config["detector"].items() if k not in ("offset", "threshold", "normal_label")}
        params.update({k: v for k, v in overrides.items() if v is not None})
        detector = cls(model, device=device, runtime=runtime, **params)
        detector._init_embedder()
        anchors = _load_safetensors(directory / ANCHORS_FILE)
        for key in ("embeddings", "images", "indices"):
            if key not in anchors:
                raise ValueError(f"{directory / ANCHORS_FILE}: missing tensor {key!r}")
        embeddings, images = anchors["embeddings"], anchors["images"].numpy()
        if embeddings.ndim != 2 or embeddings.shape[1] != model.embedding_dim or len(embeddings) != len(images):
            raise ValueError(f"{directory / ANCHORS_FILE}: anchors of shape {tuple(embeddings.shape)} do not fit "
                             f"the model's {model.embedding_dim}-d embedding and {len(images)} anchor images")
        detector._check_params(len(images))
        margin = None
        if detector.score in MARGIN_SCORES:
            if "class_centres" not in anchors or "normal_label" not in config["detector"]:
                raise ValueError(f"{directory}: score {detector.score!r} needs the class centres in {ANCHORS_FILE} "
                                 f"and the normal_label in {CONFIG_FILE}")
            margin = ClassMargin(anchors["class_centres"], config["detector"]["normal_label"])
        detector._set_class_margin(margin)
        # Select before building the index: an index (faiss HNSW on a large bank) is built once, for what is kept.
        reselect = any(overrides.get(k) is not None for k in ("n_anchors", "anchor_sampling", "random_state"))
        keep = detector.select_anchors(len(images)) if reselect else np.arange(len(images))
        detector.anchor_indices_ = anchors["indices"].numpy()[keep]
        detector.anchor_images_ = images[keep]
        detector._set_anchor_embeddings(embeddings[keep])  # the threshold for these anchors and this k
        rescored = detector.score != config["detector"].get("score", "knn")
        if not (reselect or rescored or overrides.get("k") is not None):  # keeps a calibrated or manual threshold
            detector.offset_ = float(config["detector"]["offset"])
            detector.threshold_ = config["detector"].get("threshold", {"mode": "leave-one-out"})
        return detector


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std()) or 1.0


def _load_safetensors(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the run directory")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc


def read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such run directory")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (is {directory} a metricad run directory?)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    for key in ("model", "detector"):
        if key not in config:
            raise ValueError(f"{path}: missing the {key!r} section")
    return config


def build_model_from_config(config: dict, directory: Path) -> nn.Module:
    model = create_model(config["model"]["name"], **config["model"].get("kwargs", {}))
    state = _load_safetensors(directory / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{directory / WEIGHTS_FILE}: weights do not match model "
                         f"{config['model']['name']!r}: {exc}") from exc
    return model.eval()
