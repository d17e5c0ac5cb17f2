"""Data sources and the anomaly-detection split."""

from metricad.data.fashion_mnist import CLASS_NAMES, DataNotFoundError, load_fashion_mnist, locate, read_idx
from metricad.data.images import load_images
from metricad.data.load import labelled_dir_split, load_split
from metricad.data.split import AnomalySplit, make_split, validation_split

__all__ = ["CLASS_NAMES", "AnomalySplit", "DataNotFoundError", "load_fashion_mnist", "load_images", "locate",
           "load_split", "make_split", "read_idx", "labelled_dir_split", "validation_split"]
