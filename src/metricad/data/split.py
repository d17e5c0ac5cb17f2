"""The one-class experiment split: normal class N, held-out anomaly class M, the rest as reference classes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class AnomalySplit:
    """Arrays of one (normal, anomaly) experiment.

    ``train_*``: every training image whose class is not the anomaly (normal + reference classes), with the
    original class labels kept (``training_labels`` turns them into binary or fine labels).
    ``anchor_images``: the normal training images. ``test_*``: test images of the normal and anomaly class;
    ``test_is_anomaly`` is 1 for the anomaly class. ``holdout_images`` (optional): normal images kept out of
    training and anchors, on which the experts are normalised and the threshold set. ``val_*`` (optional): a
    labelled validation set, never a test image: held-out normal images with a few anomalies (from the anomaly
    class's training images, or a folder of defects); it may choose the score and set the threshold.
    """

    normal_class: int
    anomaly_class: int
    train_images: np.ndarray
    train_classes: np.ndarray
    anchor_images: np.ndarray
    test_images: np.ndarray
    test_is_anomaly: np.ndarray
    holdout_images: np.ndarray | None = None
    val_images: np.ndarray | None = None
    val_is_anomaly: np.ndarray | None = None
    anomaly_pool: np.ndarray | None = None  # the anomaly class's training images: what validation draws from

    def validation_set(self, n_anomalies: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(images, is_anomaly)``: the held-out normal images and ``n_anomalies`` images drawn (seeded) from the
        anomaly class's *training* images (``anomaly_pool``), never a test image."""
        if self.holdout_images is None or not len(self.holdout_images):
            raise ValueError("a validation set with anomalies needs held-out normal images beside them: a holdout "
                             "above 0")
        if self.anomaly_pool is None or not 1 <= n_anomalies <= len(self.anomaly_pool):
            available = 0 if self.anomaly_pool is None else len(self.anomaly_pool)
            raise ValueError(f"--val-anomalies {n_anomalies}: the anomaly class has {available} training images")
        drawn = np.sort(np.random.default_rng([seed, 2]).choice(len(self.anomaly_pool), n_anomalies, replace=False))
        return (np.concatenate([self.holdout_images, self.anomaly_pool[drawn]]),
                np.r_[np.zeros(len(self.holdout_images), np.int64), np.ones(n_anomalies, np.int64)])

    def normal_label(self, scheme: str) -> int:
        """The label the normal class gets under ``training_labels(scheme)``."""
        if scheme == "binary":
            return 1
        return int(np.searchsorted(np.unique(self.train_classes), self.normal_class))

    def training_labels(self, scheme: str) -> np.ndarray:
        """``binary``: 1 normal / 0 everything else (the original); ``fine``: each class keeps its own label."""
        if scheme == "binary":
            return (self.train_classes == self.normal_class).astype(np.int64)
        if scheme == "fine":
            # Contiguous ids 0..C-1 so that classification-style losses get a compact label space.
            _, ids = np.unique(self.train_classes, return_inverse=True)
            return ids.astype(np.int64)
        raise ValueError(f"labels must be 'binary' or 'fine', got {scheme!r}")


def make_split(train, test, normal: int = 7, anomaly: int = 9, limit: int | None = None, seed: int = 0,
               holdout: float = 0.0, val_anomalies: int = 0, val_seed: int = 0) -> AnomalySplit:
    """Build the split from ``(images, labels)`` pairs. ``limit`` caps training images per class (random, seeded).

    ``holdout``: this fraction of the normal training images (seeded) is kept out of training and anchors, as
    ``holdout_images``. ``val_anomalies`` K > 0: K images of the anomaly class drawn (seeded by ``val_seed``) from
    its **training** images, with the held-out normal images, form the labelled validation set; the test images
    are never drawn from.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    classes = set(np.unique(train_y).tolist())
    for name, value in (("normal", normal), ("anomaly", anomaly)):
        if value not in classes:
            raise ValueError(f"--{name} {value} is not a class of the data (classes: {sorted(classes)})")
    if normal == anomaly:
        raise ValueError(f"--normal and --anomaly must differ, both are {normal}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be a positive number of images per class, got {limit}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"--holdout must be in [0, 1), got {holdout}")

    keep = np.flatnonzero(train_y != anomaly)
    if limit is not None:
        rng = np.random.default_rng(seed)
        per_class = [rng.permutation(keep[train_y[keep] == c])[:limit] for c in sorted(classes - {anomaly})]
        keep = np.sort(np.concatenate(per_class))
    held_out = np.empty(0, np.int64)
    if holdout:  # its own stream, so that a holdout leaves the limit's draw as it was
        normal_idx = keep[train_y[keep] == normal]
        held_out = np.sort(np.random.default_rng([seed, 1]).choice(
            normal_idx, int(round(holdout * len(normal_idx))), replace=False))
        keep = np.setdiff1d(keep, held_out)
    train_images, train_classes = train_x[keep], train_y[keep].astype(np.int64)
    test_mask = (test_y == normal) | (test_y == anomaly)
    split = AnomalySplit(
        normal_class=normal,
        anomaly_class=anomaly,
        train_images=train_images,
        train_classes=train_classes,
        anchor_images=train_images[train_classes == normal],
        test_images=test_x[test_mask],
        test_is_anomaly=(test_y[test_mask] == anomaly).astype(np.int64),
        holdout_images=train_x[held_out] if holdout else None,
        anomaly_pool=train_x[train_y == anomaly],  # the anomaly class's training images, never a test image
    )
    if val_anomalies:
        val_images, val_is_anomaly = split.validation_set(val_anomalies, val_seed)
        split = replace(split, val_images=val_images, val_is_anomaly=val_is_anomaly)
    return split


def validation_split(split: AnomalySplit, stand_in_anomaly: int, fraction: float = 0.1, seed: int = 0,
                     holdout: float = 0.0) -> AnomalySplit:
    """A split for choosing settings without the test images or the anomalous class.

    From ``split``'s training data only: the reference class ``stand_in_anomaly`` is removed from training and
    plays the anomaly; ``fraction`` of the normal images (seeded) are removed from training and anchors and play
    the normal test images. The test images are then the held-out normals and the stand-in class's images.
    ``holdout``: as ``make_split``'s, from the normal images that remain.
    """
    if stand_in_anomaly == split.normal_class or stand_in_anomaly not in set(split.train_classes.tolist()):
        raise ValueError(f"the stand-in anomaly must be a reference class of the training data, got "
                         f"{stand_in_anomaly}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction of normal images must be in (0, 1), got {fraction}")
    normal_idx = np.flatnonzero(split.train_classes == split.normal_class)
    rng = np.random.default_rng(seed)
    held_out = np.sort(rng.choice(normal_idx, int(round(fraction * len(normal_idx))), replace=False))
    stand_in = np.flatnonzero(split.train_classes == stand_in_anomaly)
    keep = np.setdiff1d(np.arange(len(split.train_classes)), np.concatenate([held_out, stand_in]))
    normalising = np.empty(0, np.int64)
    if holdout:
        rest = keep[split.train_classes[keep] == split.normal_class]
        normalising = np.sort(np.random.default_rng([seed, 1]).choice(rest, int(round(holdout * len(rest))),
                                                                      replace=False))
        keep = np.setdiff1d(keep, normalising)
    train_images, train_classes = split.train_images[keep], split.train_classes[keep]
    return AnomalySplit(
        normal_class=split.normal_class, anomaly_class=stand_in_anomaly,
        train_images=train_images, train_classes=train_classes,
        anchor_images=train_images[train_classes == split.normal_class],
        test_images=np.concatenate([split.train_images[held_out], split.train_images[stand_in]]),
        test_is_anomaly=np.r_[np.zeros(len(held_out), np.int64), np.ones(len(stand_in), np.int64)],
        holdout_images=split.train_images[normalising] if holdout else None)


def tiled_split(split: AnomalySplit, tiling) -> AnomalySplit:
    """``split`` with its training, anchor and held-out images cut into tiles (``metricad.tiling.Tiling``), each
    tile keeping its image's class: what a tiled run trains and fits its anchors on."""
    from dataclasses import replace

    per_image = len(tiling.boxes(*split.train_images.shape[-2:])) if len(split.train_images) else 0
    return replace(split, train_images=tiling.split_all(split.train_images),
                   train_classes=np.repeat(split.train_classes, per_image),
                   anchor_images=tiling.split_all(split.anchor_images),
                   holdout_images=None if split.holdout_images is None else tiling.split_all(split.holdout_images))
