"""Evaluating where a run finds the defect: ``metricad evaluate RUN --test-dir DIR --mask-dir MASKS``.

Every test image is scored with its anomaly map, which is brought to the image file's resolution (as its mask
is); the image metrics are ``evaluate``'s, and beside them the pixel ROC AUC and AUPRO over all pixels
(``pixel_metrics``), each defect type's image AUROC against the good images, and the overlap of the defect
masks the run predicts (image and pixel thresholds, set on normal images) with the true ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from metricad.data.folders import read_labelled_dir
from metricad.data.masks import mask_path, read_mask
from metricad.evaluate.image_metrics import evaluate
from metricad.evaluate.pixel_metrics import mask_overlap, pixel_metrics
from metricad.localization import at_file_size, require_map

CHUNK = 64  # images scored with their maps at a time


@dataclass
class Localization:
    """A test folder scored with maps: per image its path, type, score, map and true mask (file resolution)."""

    paths: list[Path]
    types: list[str]
    is_anomaly: np.ndarray
    images: np.ndarray  # at the model input, as scored
    scores: np.ndarray
    maps: list[np.ndarray]
    masks: list[np.ndarray]
    metrics: dict
    curves: dict


def true_masks(paths: list[Path], types: list[str], mask_dir) -> list[np.ndarray]:
    """Each image's true mask at its file's size (all zero for a good image); every defect image's mask is looked
    up and checked before anything is scored."""
    from PIL import Image

    masks = []
    for path, kind in zip(paths, types):
        with Image.open(path) as img:
            size = (img.height, img.width)
        masks.append(np.zeros(size, bool) if kind == "good" else read_mask(mask_path(mask_dir, kind, path.stem),
                                                                            size, path))
    return masks


def by_type(types: list[str], scores, maps, masks) -> dict:
    """Each defect type against the good images alone: its image AUROC (``auc_by_type``), and over the pixels of
    the good images and its own, its pixel AUROC and AUPRO (``pixel_auroc_by_type``, ``aupro_by_type``)."""
    kinds = np.array(types)
    good = kinds == "good"
    result = {"auc_by_type": {}, "pixel_auroc_by_type": {}, "aupro_by_type": {}}
    for kind in dict.fromkeys(types):
        if kind == "good":
            continue
        chosen = good | (kinds == kind)
        result["auc_by_type"][kind] = float(roc_auc_score(kinds[chosen] == kind, scores[chosen]))
        pixels, _ = pixel_metrics([m for m, c in zip(maps, chosen) if c], [m for m, c in zip(masks, chosen) if c])
        result["pixel_auroc_by_type"][kind] = pixels["pixel_auroc"]
        result["aupro_by_type"][kind] = pixels["aupro"]
    return result


def localize(detector, test_dir, mask_dir, skip_bad_files: bool = False) -> Localization:
    require_map(detector, "--mask-dir: ")
    channels, size = detector.input_spec
    test = read_labelled_dir(test_dir, size, channels, skip_bad_files)
    types = [path.relative_to(test_dir).parts[0] for path in test.paths]
    masks = true_masks(test.paths, types, mask_dir)
    scores, maps, predicted = [], [], []
    for start in range(0, len(test.images), CHUNK):
        chunk_scores, chunk_maps = detector.score_with_maps(test.images[start:start + CHUNK])
        scores.append(chunk_scores)
        for score, small, mask in zip(chunk_scores, chunk_maps, masks[start:start + CHUNK]):
            full, predicted_mask = at_file_size(detector, score, small, mask.shape)
            maps.append(full)
            predicted.append(predicted_mask)
    scores = np.concatenate(scores)
    metrics, _ = evaluate(detector, test.images, test.is_anomaly, scores=scores)
    pixels, curves = pixel_metrics(maps, masks)
    metrics |= pixels | by_type(types, scores, maps, masks) | {"pixel_threshold": detector.pixel_offset_,
                         "pixel_threshold_set_on": detector.pixel_threshold_set_on_,
                         "pixel_at_threshold": mask_overlap(predicted, masks), "mask_dir": str(mask_dir)}
    return Localization(test.paths, types, test.is_anomaly, test.images, scores, maps, masks, metrics, curves)
