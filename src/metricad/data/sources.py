"""Data sources by name: where a run's images come from. ``register_source("name")`` on a class adds one.

A source is built from the options (or, to resume or reopen a run, from the ``"data"`` section it wrote:
``source_from_data``) and answers four things for ``metricad.train.pipeline.train_run``:
``describe()`` (that section), ``adapt(config)`` (the recipe fitted to its images, e.g. the model's input size),
``check(chooses_with_labels, threshold)`` (refuse an impossible combination, or an option that would go unused,
before anything is written) and
``load()`` (the ``AnomalySplit`` and the files skipped as unreadable).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from metricad.thresholds import DEFAULT_THRESHOLD, HELD_OUT_MODES

SOURCES: dict[str, type] = {}


def register_source(name: str):
    def register(cls):
        if name in SOURCES:
            raise ValueError(f"data source {name!r} is already registered")
        cls.name = name
        SOURCES[name] = cls
        return cls
    return register


def source_from_data(data: dict, data_dir=None):
    """The source a run's ``"data"`` section describes (``data_dir``: where Fashion-MNIST is, if not the default)."""
    name = data.get("dataset", "fashion-mnist")
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; available: {', '.join(SOURCES)}")
    return SOURCES[name].from_data(data, data_dir)


@register_source("fashion-mnist")
@dataclass
class FashionMNIST:
    """Two Fashion-MNIST classes: ``normal`` is trained on, ``anomaly`` never; the other eight are reference
    classes. ``val_anomalies`` K > 0: K anomaly images from the class's *training* split, for ``--score auto``."""

    normal: int = 7
    anomaly: int = 9
    limit: int | None = None
    data_dir: str | os.PathLike | None = None
    val_anomalies: int = 0
    val_seed: int = 0
    split_seed: int = 0
    holdout: float = 0.0

    @classmethod
    def from_data(cls, data: dict, data_dir=None) -> "FashionMNIST":
        return cls(data["normal"], data["anomaly"], data.get("limit"), data_dir, data.get("val_anomalies", 0),
                   data.get("val_seed", 0), data.get("split_seed", 0), data.get("holdout", 0.0))

    def adapt(self, config):
        self.split_seed, self.holdout = config.seed, config.holdout  # the split follows the recipe's seed
        from metricad.recipe import PRETRAINED

        return self.for_pretrained(config) if config.model in PRETRAINED else config

    @staticmethod
    def for_pretrained(config):
        """A pretrained backbone's recipe on 28x28 grey images: enlarged ``PRETRAINED_SCALE`` times inside it."""
        from metricad.recipe import PRETRAINED_SCALE

        return config.with_options({"model_kwargs": {"input_size": [28, 28], "in_channels": 1,
                                                     "scale": PRETRAINED_SCALE}})

    def check(self, chooses_with_labels: bool, threshold: dict) -> None:
        if chooses_with_labels != bool(self.val_anomalies):
            raise ValueError("--score auto chooses with a few labelled anomalies: give --val-anomalies K with it "
                             "(and only with it)")
        if threshold["mode"] not in HELD_OUT_MODES and not chooses_with_labels:
            raise ValueError(f"threshold mode {threshold['mode']!r} needs labelled validation images: on "
                             "Fashion-MNIST, --score auto --val-anomalies K sets the threshold (best F1)")
        _check_threshold(threshold, chooses_with_labels)

    def describe(self) -> dict:
        return {"dataset": "fashion-mnist", "normal": self.normal, "anomaly": self.anomaly, "limit": self.limit,
                "split_seed": self.split_seed, "holdout": self.holdout,
                **({"val_anomalies": self.val_anomalies, "val_seed": self.val_seed} if self.val_anomalies else {})}

    def load(self):
        from metricad.data.fashion_mnist import load_fashion_mnist
        from metricad.data.split import make_split

        train, test = load_fashion_mnist(self.data_dir)
        return make_split(train, test, self.normal, self.anomaly, self.limit, self.split_seed, self.holdout,
                          self.val_anomalies, self.val_seed), []


@register_source("folders")
@dataclass
class ImageFolders:
    """Image folders (``metricad.data.folders``): good parts (enough alone), optional reference images, an optional
    labelled validation folder. ``image_size`` / ``channels`` default to what the normal images are; ``holdout``
    (default 0.1) keeps that fraction of the normal images out of training and anchors. ``tile`` (pixels) trains
    and scores ``tile`` x ``tile`` tiles of the images at their own size (``metricad.tiling``)."""

    normal_dir: str | os.PathLike
    reference_dir: str | os.PathLike | None = None
    val_dir: str | os.PathLike | None = None
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    holdout: float | None = None
    skip_bad_files: bool = False
    split_seed: int = 0
    tile: int | None = None
    tile_overlap: int = 0

    @classmethod
    def from_data(cls, data: dict, data_dir=None) -> "ImageFolders":
        tiling = data.get("tiling") or {}
        return cls(data["normal_dir"], data.get("reference_dir"), data.get("val_dir"), tuple(data["image_size"]),
                   data["channels"], data.get("holdout", 0.0), data.get("skip_bad_files", False),
                   data.get("split_seed", 0), tiling.get("size"), tiling.get("overlap", 0))

    def check(self, chooses_with_labels: bool, threshold: dict) -> None:
        if self.tile is not None:
            from metricad.tiling import Tiling

            Tiling(self.tile, self.tile_overlap)  # the values' own errors
            if self.val_dir or chooses_with_labels:
                raise ValueError("--tile: a tiled run sets its threshold on held-out good images; --val-dir and "
                                 "--score auto are not available with it yet")
        if threshold["mode"] == "tail" and self.holdout == 0:
            raise ValueError("--threshold-mode tail fits the held-out good images' scores: --holdout 0 keeps none")
        if threshold["mode"] == "tail" and self.tile is not None:
            raise ValueError("--threshold-mode tail: a tiled run sets its threshold on its held-out images' worst "
                             "tiles by --contamination; the tail fit is not available with --tile yet")
        labelled = chooses_with_labels or threshold["mode"] not in HELD_OUT_MODES
        if labelled and not self.val_dir:
            what = "--score auto" if chooses_with_labels else f"threshold mode {threshold['mode']!r}"
            raise ValueError(f"{what} needs labelled images: pass --val-dir")
        if self.val_dir and not labelled and self.holdout != 0:
            raise ValueError(f"--val-dir {self.val_dir}: with held-out good images the threshold is set on them "
                             "(--contamination), so the labelled images would go unused: pass --threshold-mode "
                             "fpr or f1 (they set the threshold), --score auto (they choose the score), or leave "
                             "--val-dir out")
        _check_threshold(threshold, chooses_with_labels)

    def adapt(self, config):
        from metricad.data.folders import infer_input_spec
        from metricad.data.images import list_image_files

        if self.reference_dir and config.epochs == 0:
            raise ValueError(f"--reference-dir {self.reference_dir}: the recipe trains nothing (epochs 0: the "
                             f"folder default, a pretrained backbone as it is, scored patch by patch), so the "
                             "reference images would go unused: pass --preset default to train an embedding on "
                             "them (the original method), or leave --reference-dir out")
        self.holdout = 0.1 if self.holdout is None else self.holdout
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"--holdout must be in [0, 1), got {self.holdout}")
        if self.image_size is None or self.channels is None:
            from metricad.recipe import PRETRAINED

            found_channels, found_size = infer_input_spec(list_image_files([self.normal_dir]),
                                                          config.model in PRETRAINED, own_size=self.tile is not None)
            self.channels, self.image_size = self.channels or found_channels, self.image_size or found_size
        if self.channels not in (1, 3):
            raise ValueError(f"--channels must be 1 or 3, got {self.channels}")
        if self.tile is not None and round(self.holdout * len(list_image_files([self.normal_dir]))) < 2:
            raise ValueError(f"--tile sets the image threshold on held-out good images scored whole: --holdout "
                             f"{self.holdout} keeps fewer than two of {self.normal_dir}'s images out")
        if self.tile is not None and min(self.image_size) < self.tile:
            raise ValueError(f"--tile {self.tile}: the images ({self.image_size[0]}x{self.image_size[1]}) are smaller "
                             "than one tile: tiling is for images larger than the model input")
        self.image_size, self.split_seed = tuple(self.image_size), config.seed
        model_input = self.image_size if self.tile is None else (self.tile, self.tile)
        config = config.with_options({"holdout": self.holdout, "model_kwargs": {
            "input_size": list(model_input), "in_channels": self.channels}})
        return _negatives_for_input(config, model_input)

    def describe(self) -> dict:
        def resolved(path):
            return os.fspath(Path(path).resolve()) if path else None

        return {"dataset": "folders", "normal_dir": resolved(self.normal_dir),
                "reference_dir": resolved(self.reference_dir), "val_dir": resolved(self.val_dir),
                "image_size": list(self.image_size), "channels": self.channels, "holdout": self.holdout,
                "split_seed": self.split_seed, "skip_bad_files": self.skip_bad_files,
                "tiling": None if self.tile is None else {"size": self.tile, "overlap": self.tile_overlap}}

    def load(self):
        from metricad.data.folders import folder_split

        return folder_split(self.describe())


def _check_threshold(threshold: dict, chooses_with_labels: bool) -> None:
    """``--score auto`` sets the threshold itself (best F1 on the labelled images): a threshold option would go
    unused."""
    if chooses_with_labels and threshold != DEFAULT_THRESHOLD:
        raise ValueError("--score auto sets the threshold at the best F1 on the labelled validation images: leave "
                         "out --threshold-mode, --contamination and --target-fpr")


def _negatives_for_input(config, image_size: tuple[int, int]):
    """Quarter turns of a non-square input change its shape: the default's are left out (with a note); asked for
    by name, they are an error before anything is written."""
    from metricad.data.negatives import check_fits, misfits
    from metricad.recipe import PRESETS

    turns = misfits(config.negatives, *image_size)
    if not turns:
        return config
    if config.negatives != PRESETS["default"].negatives:
        try:
            check_fits(config.negatives, *image_size)
        except ValueError as error:
            raise ValueError(f"--negatives {error}: pass --image-size N or other --negatives") from None
    kept = [name for name in config.negatives if name not in turns]
    print(f"the model input {image_size[0]}x{image_size[1]} is not square: shifted negatives {kept} only "
          "(--negatives to choose)", file=sys.stderr)
    return replace(config, negatives=kept)
