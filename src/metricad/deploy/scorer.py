"""What scores images for ``metricad score`` and ``metricad serve``: a model bundle (an ``.onnx`` file, torch-free)
or a run directory (needs the ``train`` extra), behind one interface, ``Scorer``, that a fitted
``metricad.Detector`` satisfies too (a conformance test checks all three). A scorer with anomaly maps also has
``has_map``, ``pixel_offset_``, ``score_with_maps`` and ``predict_masks`` (``metricad.localization.require_map``
refuses one without).
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
class DeployedScorer(Scorer, Protocol):
    """A ``Scorer`` loaded from a file for the line: it also names its model and describes itself (``/info``)."""

    model_id: str

    def describe(self) -> dict: ...


def is_bundle(target) -> bool:
    return Path(target).suffix.lower() == ".onnx"


class RunScorer:
    """A run directory as a ``DeployedScorer``: its ``scorer`` (the detector, or for a tiled run the
    ``metricad.tiling.TiledScorer`` around it, which scores whole images and holds their threshold)."""

    def __init__(self, path, device=None, runtime: str = "torch"):
        from metricad.run import open_run

        self.run = open_run(path, device=device, runtime=runtime)
        self.scorer, self.model_id, self.score = self.run.scorer, self.run.model_id, self.run.detector.score
        self.version = self.run.version  # metricad.deploy.versions

    def normal_scores(self):
        """The scores of the good images the threshold was set on; None for a tiled run (set on whole images)."""
        return None if self.run.config.get("tiling") else self.run.detector.normal_scores()

    @property
    def input_spec(self):
        return self.scorer.input_spec

    @property
    def offset_(self) -> float:
        return self.scorer.offset_

    @property
    def pixel_offset_(self):
        return self.scorer.pixel_offset_

    @property
    def has_map(self) -> bool:
        return self.run.detector.has_map

    def score_samples(self, images):
        return self.scorer.score_samples(images)

    def predict_scores(self, scores):
        return self.scorer.predict_scores(scores)

    def normalized_score(self, scores):
        return self.scorer.normalized_score(scores)

    def score_with_maps(self, images):
        return self.scorer.score_with_maps(images)

    def predict_masks(self, scores, maps):
        return self.scorer.predict_masks(scores, maps)

    def set_threads(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def describe(self) -> dict:
        detector = self.run.detector
        return {"run": str(self.run.path), "version": self.version, "models": self.run.config["models"],
                "score": detector.score,
                "anchors": len(detector.anchor_indices_), "k": detector.k, "runtime": detector.runtime,
                "threshold_set_on": self.scorer.threshold_set_on_, "pixel_threshold": detector.pixel_offset_,
                "pixel_threshold_set_on": detector.pixel_threshold_set_on_}


def load_scorer(target, device=None, runtime: str = "torch", threads: int | None = None):
    """The ``DeployedScorer`` of ``target``: a ``Bundle`` for an ``.onnx`` file, a ``RunScorer`` for a run
    directory, or ``target`` itself when it already is one (anything with ``DeployedScorer``'s methods, e.g. a
    scorer of your own, is scored and served as it is)."""
    if isinstance(target, DeployedScorer):
        return target
    if is_bundle(target):
        from metricad.deploy.bundle import Bundle

        bundle = Bundle(target, threads=threads, use_cuda=device is not None and str(device).startswith("cuda"))
        return bundle.tiled() if bundle.metadata.get("tiling") else bundle
    if not Path(target).is_dir():
        raise FileNotFoundError(f"{target}: no such run directory or model bundle (.onnx)")
    scorer = RunScorer(target, device, runtime)
    if threads is not None:
        scorer.set_threads(threads)
    return scorer
