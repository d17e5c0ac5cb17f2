"""What scores images for ``metricad score`` and ``metricad serve``: a model bundle (an ``.onnx`` file, torch-free)
or a run directory (needs the ``train`` extra), behind one interface, ``Scorer``, that a fitted
``metricad.Detector`` satisfies too (a conformance test checks all three).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Scorer(Protocol):
    """Scores images and decides: higher score = more anomalous, anomaly when score > ``offset_`` (the one rule,
    ``metricad.thresholds.is_anomalous``). ``input_spec`` is ``(channels, (height, width))``."""

    input_spec: tuple[int, tuple[int, int]]
    offset_: float

    def score_samples(self, images) -> np.ndarray: ...

    def predict_scores(self, scores) -> np.ndarray: ...

    def normalized_score(self, scores) -> np.ndarray: ...


@runtime_checkable
class MapScorer(Scorer, Protocol):
    """A ``Scorer`` that also says where: anomaly maps at the input's resolution (when ``has_map``), and defect
    masks where a map is above ``pixel_offset_`` in an image flagged by ``offset_``."""

    has_map: bool
    pixel_offset_: float | None

    def score_with_maps(self, images) -> tuple[np.ndarray, np.ndarray]: ...

    def predict_masks(self, scores, maps) -> np.ndarray: ...


@runtime_checkable
class DeployedScorer(Scorer, Protocol):
    """A ``Scorer`` loaded from a file for the line: it also names its model and describes itself (``/info``)."""

    model_id: str

    def describe(self) -> dict: ...


def is_bundle(target) -> bool:
    return Path(target).suffix.lower() == ".onnx"


class RunScorer:
    """A run directory's detector as a ``DeployedScorer``."""

    def __init__(self, path, device=None, runtime: str = "torch"):
        from metricad.run import open_run

        self.run = open_run(path, device=device, runtime=runtime)
        self.detector, self.model_id = self.run.scorer, self.run.model_id  # a tiled run's scores whole images
        self.score = self.detector.score
        self.input_spec, self.offset_ = self.detector.input_spec, self.detector.offset_

    def score_samples(self, images):
        return self.detector.score_samples(images)

    def predict_scores(self, scores):
        return self.detector.predict_scores(scores)

    def normalized_score(self, scores):
        return self.detector.normalized_score(scores)

    @property
    def has_map(self) -> bool:
        return self.detector.has_map

    @property
    def pixel_offset_(self):
        return self.detector.pixel_offset_

    def score_with_maps(self, images):
        return self.detector.score_with_maps(images)

    def predict_masks(self, scores, maps):
        return self.detector.predict_masks(scores, maps)

    def set_threads(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def describe(self) -> dict:
        detector = self.detector
        return {"run": str(self.run.path), "models": self.run.config["models"], "score": detector.score,
                "anchors": len(detector.anchor_indices_), "k": detector.k, "runtime": detector.runtime,
                "threshold_set_on": detector.threshold_set_on_, "pixel_threshold": detector.pixel_offset_,
                "pixel_threshold_set_on": detector.pixel_threshold_set_on_}


def load_scorer(target, device=None, runtime: str = "torch", threads: int | None = None):
    """The ``DeployedScorer`` of ``target``: a ``Bundle`` for an ``.onnx`` file, else a ``RunScorer``."""
    if is_bundle(target):
        from metricad.deploy.bundle import Bundle

        bundle = Bundle(target, threads=threads, use_cuda=device is not None and str(device).startswith("cuda"))
        return bundle.tiled() if bundle.metadata.get("tiling") else bundle
    scorer = RunScorer(target, device, runtime)
    if threads is not None:
        scorer.set_threads(threads)
    return scorer
