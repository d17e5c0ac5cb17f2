"""Image files to arrays: PNG/JPEG (any mode, any size) or one ``.npy`` batch, for scoring."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_image_files(specs) -> list[str]:
    """Image paths, in a stable order, from folders (searched recursively), glob patterns, ``.txt`` lists (one
    path a line) and files. A file reached twice (a folder and a glob over it, ``a/../a/x.png``, a link) is listed
    once, under its first spelling: what is the same file is decided on resolved paths."""
    paths, seen = [], set()
    for spec in map(str, specs):
        if os.path.isdir(spec):
            found = sorted(str(p) for p in Path(spec).rglob("*")
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        elif spec.endswith(".txt") and os.path.isfile(spec):
            found = [line.strip() for line in Path(spec).read_text().splitlines() if line.strip()]
        elif os.path.isfile(spec):
            found = [spec]
        else:
            raise FileNotFoundError(f"{spec}: no such folder, file or matching path")
        if not found:
            raise ValueError(f"{spec}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
        for path in found:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
    return paths


def image_to_array(img, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """A PIL image as the model's uint8 input: grey ``(H, W)`` or RGB ``(3, H, W)``, resized to ``size`` (None:
    kept at its own size)."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array if channels == 1 else array.transpose(2, 0, 1)


def resized(array: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """An ``image_to_array`` result (e.g. a file at its own size) resized to ``size`` as the file would be."""
    from PIL import Image

    return image_to_array(Image.fromarray(array if array.ndim == 2 else array.transpose(1, 2, 0)), size, channels)


def read_image(path: Path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """One image file as ``image_to_array`` returns it; ``ValueError`` naming the file if it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return image_to_array(img, size, channels)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        # for corrupt files; every one of them means "not a readable image" here.
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc


def load_images(paths, size: tuple[int, int] = (28, 28), channels: int = 1) -> tuple[list[str], np.ndarray]:
    """Load files into one uint8 batch ``(N, H, W)`` (or ``(N, 3, H, W)``), returning their names too.

    A single ``.npy`` file is taken as a batch (``(N, H, W)`` or ``(N, C, H, W)``), its rows named ``file.npy[i]``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no input files given")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    if any(p.suffix.lower() == ".npy" for p in paths):
        if len(paths) != 1:
            raise ValueError("a .npy batch must be the only input file")
        try:
            batch = np.load(paths[0], allow_pickle=False)  # never unpickle user files
        except ValueError as exc:
            raise ValueError(f"{paths[0]}: not a plain numeric .npy array ({exc})") from exc
        if batch.ndim == 2:
            batch = batch[None]
        if batch.ndim not in (3, 4) or not np.issubdtype(batch.dtype, np.number):
            raise ValueError(f"{paths[0]}: expected a numeric array (N, H, W) or (N, C, H, W), got "
                             f"{batch.dtype} {batch.shape}")
        return [f"{os.fspath(paths[0])}[{i}]" for i in range(len(batch))], batch
    unknown = [p for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES]
    if unknown:
        raise ValueError(f"{unknown[0]}: unsupported file type (use PNG/JPEG images or one .npy batch)")
    return [os.fspath(p) for p in paths], np.stack([read_image(p, size, channels) for p in paths])
