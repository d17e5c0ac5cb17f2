"""Image folders as training and evaluation data: good parts, reference images, labelled validation/test sets.

Layouts:
- ``--normal-dir``: every image under it (recursively) is normal; good images alone are enough.
- ``--reference-dir`` (optional): each sub-folder is a reference class (recursively); images directly inside form
  one class.
- ``--val-dir`` / ``--test-dir``: ``good/`` holds normal images; every other sub-folder holds anomalies.

Training images are ordered by file name (then path), whatever folder they are in, so a dataset exported with
index-numbered names (``metricad export-dataset``) trains in its original order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metricad.data.images import IMAGE_SUFFIXES, list_image_files, read_image

# The default model input keeps the images' median aspect ratio, its shorter side this many pixels (a stated
# bilinear resize): 320 for a pretrained backbone (chosen on held-out good images with synthetic defects,
# docs/decisions.md; each side a multiple of 16, its coarsest stride), and for a network trained from scratch on
# two CPU cores the images' own size, its longer side at most 64.
PRETRAINED_SIDE, SCRATCH_SIDE = 320, 64


class BadImageFiles(ValueError):
    pass


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _no_images(directory: Path) -> ValueError:
    return ValueError(f"{directory}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")


def _image_groups(directory: Path) -> dict[str, list[Path]]:
    """``{sub-folder name: its images}`` for each sub-folder holding images, plus ``{directory name: the
    images directly inside}`` when there are any."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    groups = {}
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        images = sorted(filter(_is_image, sub.rglob("*")))
        if images:
            groups[sub.name] = images
    loose = sorted(filter(_is_image, directory.iterdir()))
    if loose:
        groups[directory.name] = loose
    if not groups:
        raise _no_images(directory)
    return groups


def reference_classes(directory: str | os.PathLike) -> dict[str, list[Path]]:
    """Reference classes: one per sub-folder; images directly inside form one more class."""
    return _image_groups(Path(directory))


def labelled_subfolders(directory: str | os.PathLike, what: str) -> dict[str, list[Path]]:
    """``{sub-folder name: images}`` of a ``good/`` + anomalies layout (``what`` names the option in errors)."""
    groups = _image_groups(Path(directory))
    if "good" not in groups:
        raise ValueError(f"{what} {directory}: needs a good/ sub-folder of normal images (and sub-folders of "
                         "anomalous images)")
    return groups


def infer_input_spec(paths: list[Path], pretrained: bool = False, sample: int = 256,
                     own_size: bool = False) -> tuple[int, tuple[int, int]]:
    """``(channels, (height, width))`` read from the headers of an even sample of the images: grey if every
    sampled image is grey, else RGB; the size keeps their median aspect ratio with its shorter side
    ``PRETRAINED_SIDE`` (a pretrained backbone, each side a multiple of 16), else their median size with its longer
    side at most ``SCRATCH_SIDE``; ``own_size`` (tiling): their median size as it is."""
    from PIL import Image

    modes, aspects, heights, widths = set(), [], [], []
    for path in paths[:: max(1, len(paths) // sample)]:
        try:
            with Image.open(path) as img:
                modes.add(img.mode)
                aspects.append(img.width / img.height)
                heights.append(img.height)
                widths.append(img.width)
        except Exception:  # noqa: BLE001 - unreadable files are reported when the images are read
            continue
    if not aspects:
        raise ValueError(f"none of the sampled images under {Path(paths[0]).parent} could be read")
    channels = 1 if modes <= {"1", "L", "I", "I;16", "F"} else 3
    aspect = float(np.median(aspects))
    if own_size:
        return channels, (int(np.median(heights)), int(np.median(widths)))
    if pretrained:
        height, width = (PRETRAINED_SIDE, PRETRAINED_SIDE * aspect) if aspect >= 1 else (
            PRETRAINED_SIDE / aspect, PRETRAINED_SIDE)
        return channels, (max(16, 16 * round(height / 16)), max(16, 16 * round(width / 16)))
    height, width = float(np.median(heights)), float(np.median(widths))
    scale = min(1.0, SCRATCH_SIDE / max(height, width))
    return channels, (max(4, round(height * scale)), max(4, round(width * scale)))


def read_images(paths: list[Path], size: tuple[int, int], channels: int,
                skip_bad_files: bool = False) -> tuple[np.ndarray, list[Path], list[tuple[str, str]]]:
    """Decode ``paths`` into one uint8 batch. A file that cannot be read is an error naming it, or, with
    ``skip_bad_files``, left out and returned in ``skipped`` as ``(path, reason)``."""
    from metricad.progress import progress

    arrays, kept, skipped = [], [], []
    for path in progress(paths, "reading images", unit="image"):
        try:
            arrays.append(read_image(path, size, channels))
            kept.append(path)
        except ValueError as exc:
            if not skip_bad_files:
                raise BadImageFiles(f"{exc}; pass --skip-bad-files to leave such files out") from exc
            skipped.append((os.fspath(path), str(exc)))
    if not arrays:
        raise ValueError(f"no readable image among {len(paths)} files (first: {paths[0]})")
    return np.stack(arrays), kept, skipped


@dataclass
class LabelledImages:
    images: np.ndarray
    is_anomaly: np.ndarray
    paths: list[Path]
    skipped: list[tuple[str, str]]


def read_labelled_dir(directory, size, channels, skip_bad_files=False, what="--test-dir") -> LabelledImages:
    groups = labelled_subfolders(directory, what)
    paths = [p for name in groups for p in groups[name]]
    images, kept, skipped = read_images(paths, size, channels, skip_bad_files)
    anomalous = {p for name, ps in groups.items() if name != "good" for p in ps}
    return LabelledImages(images, np.array([p in anomalous for p in kept], dtype=np.int64), kept, skipped)


def folder_split(data: dict):
    """The ``AnomalySplit`` of a folder run described by ``data`` (the run's ``config.json`` "data" section).

    Normal images get class 0, reference classes 1..K in sub-folder order. With ``holdout`` > 0 that fraction
    of the normal images (seeded) is kept out of training and anchors (``holdout_images``); a ``val_dir`` gives
    the labelled validation set. The split has no test images: a folder run is evaluated on ``--test-dir``.
    """
    from metricad.data.split import AnomalySplit

    size, channels, skip = tuple(data["image_size"]), data["channels"], data.get("skip_bad_files", False)
    normal_paths = [Path(p) for p in list_image_files([data["normal_dir"]])]
    references = reference_classes(data["reference_dir"]) if data.get("reference_dir") else {}
    rng = np.random.default_rng(data.get("split_seed", 0))
    n_holdout = int(round(data.get("holdout", 0.0) * len(normal_paths)))
    holdout = set(rng.choice(len(normal_paths), n_holdout, replace=False).tolist()) if n_holdout else set()
    train_normal = [p for i, p in enumerate(normal_paths) if i not in holdout]
    labelled = [(p, 0) for p in train_normal] + [(p, c) for c, ps in enumerate(references.values(), 1) for p in ps]
    labelled.sort(key=lambda item: (item[0].name, os.fspath(item[0])))
    train_images, kept, skipped = read_images([p for p, _ in labelled], size, channels, skip)
    label_of = dict(labelled)
    train_classes = np.array([label_of[p] for p in kept], dtype=np.int64)
    if not np.any(train_classes == 0):
        raise ValueError(f"{data['normal_dir']}: no readable normal training image left")
    held = val = None
    if holdout:
        held, _, bad = read_images([normal_paths[i] for i in sorted(holdout)], size, channels, skip)
        skipped += bad
    if data.get("val_dir"):
        val = read_labelled_dir(data["val_dir"], size, channels, skip, what="--val-dir")
        skipped += val.skipped
    empty = np.empty((0, *train_images.shape[1:]), np.uint8)
    return AnomalySplit(normal_class=0, anomaly_class=-1, train_images=train_images, train_classes=train_classes,
                        anchor_images=train_images[train_classes == 0], test_images=empty,
                        test_is_anomaly=np.empty(0, np.int64), holdout_images=held,
                        val_images=None if val is None else val.images,
                        val_is_anomaly=None if val is None else val.is_anomaly), skipped


def export_split_to_folders(out: str | os.PathLike, train, test, normal: int, anomaly: int,
                            class_names: list[str]) -> Path:
    """Write a Fashion-MNIST split as PNG folders in the layout above, each file named by its index in the
    original data so that training on the folders sees the images in the original order.

    ``out/normal/``, ``out/reference/<class>/``, ``out/test/good/``, ``out/test/<anomaly class>/``; written into
    a temporary sibling first and renamed when complete.
    """
    import shutil
    import tempfile

    from PIL import Image

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists: choose another --out")
    class_names = [name.replace("/", "-").replace(" ", "-") for name in class_names]  # folder-safe
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (train_x, train_y), (test_x, test_y) = train, test
        for i, (image, label) in enumerate(zip(train_x, train_y)):
            if label == anomaly:
                continue
            folder = tmp / "normal" if label == normal else tmp / "reference" / class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:05d}.png")
        for i, (image, label) in enumerate(zip(test_x, test_y)):
            if label not in (normal, anomaly):
                continue
            folder = tmp / "test" / ("good" if label == normal else class_names[label])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:05d}.png")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
