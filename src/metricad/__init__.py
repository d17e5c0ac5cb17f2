"""metricad: image anomaly detection by deep metric learning.

Train an embedding with a triplet-style loss on normal and reference images, memorise the normal training
embeddings as anchors, and score a new image by its distance to the nearest anchors, by default plus its class
margin (higher = more anomalous).
"""

__version__ = "0.1.0"

from metricad.class_margin import ClassMargin  # noqa: E402
from metricad.detector import Detector, NotFittedError  # noqa: E402
from metricad.training import PRESETS, TrainConfig, train_embedding  # noqa: E402

__all__ = ["ClassMargin", "Detector", "NotFittedError", "PRESETS", "TrainConfig", "__version__", "train_embedding"]
