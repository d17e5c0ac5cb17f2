"""What scores images for ``metricad score`` and ``metricad serve``: a model bundle (an ``.onnx`` file, torch-free)
or a run directory (needs the ``train`` extra). Both answer the same small interface: ``score_samples``,
``predict_scores`` (the decision), ``normalized_score``, ``input_spec``, ``offset_``, ``model_id`` and
``describe()``.
"""

from __future__ import annotations

from pathlib import Path


def is_bundle(target) -> bool:
    return Path(target).suffix.lower() == ".onnx"


class RunScorer:
    """A run directory's detector behind the scorer interface."""

    def __init__(self, path, device=None, runtime: str = "torch"):
        from metricad.run import open_run

        self.run = open_run(path, device=device, runtime=runtime)
        self.detector, self.model_id = self.run.detector, self.run.model_id
        self.input_spec, self.offset_ = self.detector.input_spec, self.detector.offset_

    def score_samples(self, images):
        return self.detector.score_samples(images)

    def predict_scores(self, scores):
        return self.detector.predict_scores(scores)

    def normalized_score(self, scores):
        return self.detector.normalized_score(scores)

    def set_threads(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def describe(self) -> dict:
        detector = self.detector
        return {"run": str(self.run.path), "models": self.run.config["models"], "score": detector.score,
                "anchors": len(detector.anchor_indices_), "k": detector.k, "runtime": detector.runtime,
                "threshold_set_on": detector.threshold_}


def load_scorer(target, device=None, runtime: str = "torch", threads: int | None = None):
    """The scorer of ``target``: a ``Bundle`` for an ``.onnx`` file, else a ``RunScorer``."""
    if is_bundle(target):
        from metricad.bundle import Bundle

        return Bundle(target, threads=threads, use_cuda=device is not None and str(device).startswith("cuda"))
    scorer = RunScorer(target, device, runtime)
    if threads is not None:
        scorer.set_threads(threads)
    return scorer
