"""metricad: image anomaly detection by deep metric learning.

Train an embedding with a metric-learning loss on normal and reference images, memorise the normal training
images as anchors, and score a new image by experts (its k-NN distance to the anchors, its class margin, ...)
normalised on normal images and averaged: higher = more anomalous.

The names below are imported on first use, so that ``import metricad`` needs neither torch nor the web stack
(a light install scores model bundles with ``metricad.Bundle``).
"""

__version__ = "0.1.0"

_EXPORTS = {"Detector": "metricad.detector", "NotFittedError": "metricad.detector", "PRESETS": "metricad.recipe",
            "TrainConfig": "metricad.recipe", "train_embedding": "metricad.train.loop", "open_run": "metricad.run",
            "Bundle": "metricad.deploy.bundle"}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'metricad' has no attribute {name!r}")
