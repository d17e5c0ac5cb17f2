"""The split a run's "data" section describes, and a labelled folder as test images."""

from __future__ import annotations

import sys

import numpy as np

from metricad.data.folders import read_labelled_dir
from metricad.data.sources import source_from_data
from metricad.data.split import AnomalySplit


def load_split(data: dict, data_dir=None) -> AnomalySplit:
    """The split a run's ``"data"`` section describes (``metricad.data.sources``)."""
    return source_from_data(data, data_dir).load()[0]


def labelled_dir_split(test_dir, channels: int, size: tuple[int, int],
                       skip_bad_files: bool = False) -> AnomalySplit:
    """A split whose test images are ``test_dir``'s (good/ + anomalous sub-folders), at a model's input spec."""
    test = read_labelled_dir(test_dir, size, channels, skip_bad_files)
    for path, reason in test.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    empty = np.empty((0, *test.images.shape[1:]), np.uint8)
    return AnomalySplit(normal_class=0, anomaly_class=-1, train_images=empty, train_classes=np.empty(0, np.int64),
                        anchor_images=empty, test_images=test.images, test_is_anomaly=test.is_anomaly)
