"""Anomaly maps at an image file's own resolution, and what is made of them: the map files (16-bit PNG or float32
TIFF), an overlay on the image, the defect regions (bounding boxes and area). Numpy and Pillow only: the
torch-free bundle writes the same files as a run (scipy, for the regions, is imported where they are asked for).

A map's values are in z-score units of normal images (``metricad.scoring.maps``); ``pixel_offset`` is the pixel
threshold. A 16-bit PNG cannot hold such values as they are, so it holds ``normalized_map`` (0.5 at the pixel
threshold, like ``normalized_score`` for scores) scaled to 0..65535; the TIFF holds the values themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAP_FORMATS = ("png", "tiff")
# A blue-cyan-yellow-red ramp for the overlay, by hand: the light install has no matplotlib for its colormaps.
_RAMP = np.array([[0, 0, 128], [0, 96, 255], [0, 224, 224], [255, 230, 0], [255, 64, 0], [160, 0, 0]], np.float32)


def no_map_error(score: str, where: str = "") -> ValueError:
    """The one answer to a request for a map from a score that has none (``where``: what asked, e.g. a file)."""
    return ValueError(f"{where}score {score!r} has no anomaly map: only a patch-level expert (patch) locates "
                      "defects; train the run with --score patch (the folder default, --preset inspection, has it)")


def require_map(scorer, where: str = "") -> None:
    """Refuse, by ``no_map_error``, a scorer (a detector, run, bundle or tiled scorer) without anomaly maps."""
    if not getattr(scorer, "has_map", False):
        raise no_map_error(scorer.score, where)


def at_file_size(scorer, score: float, anomaly_map: np.ndarray, size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(map, defect mask)`` of one image at its file's resolution ``size``: its map (model input resolution)
    resized there, and the mask the scorer's image and pixel thresholds give it there. The one way a map is
    brought to a file, for map files, Parquet boxes, the service and the evaluation against true masks."""
    full = to_size(anomaly_map, size)
    return full, scorer.predict_masks(np.array([score]), full[None])[0]


def to_size(anomaly_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``anomaly_map`` ``(H, W)`` resized bilinearly to ``size`` ``(height, width)``, as the image was resized to
    the model's input (``metricad.data.images.image_to_array``), float32."""
    from PIL import Image

    anomaly_map = np.asarray(anomaly_map, np.float32)
    if anomaly_map.shape == tuple(size):
        return anomaly_map
    resized = Image.fromarray(anomaly_map, mode="F").resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(resized, np.float32)


def normalized_map(anomaly_map: np.ndarray, pixel_offset: float) -> np.ndarray:
    """Map values mapped monotonically to (0, 1), 0.5 at the pixel threshold: ``1 / (1 + exp(offset - value))``."""
    values = np.asarray(anomaly_map, np.float64)
    return 1.0 / (1.0 + np.exp(np.clip(pixel_offset - values, -700, 700)))


def map_png(anomaly_map: np.ndarray, pixel_offset: float):
    """The map as a 16-bit greyscale Pillow image of ``normalized_map`` (32768 at the pixel threshold)."""
    from PIL import Image

    levels = np.round(normalized_map(anomaly_map, pixel_offset) * 65535).astype(np.uint16)
    return Image.fromarray(levels)  # uint16 -> mode "I;16": saved as a 16-bit PNG


def mask_png(mask: np.ndarray):
    """A defect mask as an 8-bit Pillow image, 255 where defective (MVTec AD's ground-truth convention)."""
    from PIL import Image

    return Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255)


def write_map(path: Path, anomaly_map: np.ndarray, pixel_offset: float, fmt: str = "png") -> Path:
    """Write one map: ``fmt`` "png" (``map_png``) or "tiff" (the float32 values themselves)."""
    from PIL import Image

    from metricad.files import atomic_write

    if fmt not in MAP_FORMATS:
        raise ValueError(f"map format must be one of {', '.join(MAP_FORMATS)}, got {fmt!r}")
    image = map_png(anomaly_map, pixel_offset) if fmt == "png" else Image.fromarray(
        np.asarray(anomaly_map, np.float32), mode="F")
    atomic_write(path, lambda p: image.save(p, format="PNG" if fmt == "png" else "TIFF"))
    return path


def overlay(image: np.ndarray, anomaly_map: np.ndarray, pixel_offset: float, mask: np.ndarray | None = None,
            alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 picture: the image (grey ``(H, W)`` or RGB ``(H, W, 3)``) under the coloured normalised map,
    the defect mask's outline in white."""
    base = np.asarray(image, np.float32)
    base = np.repeat(base[..., None], 3, axis=2) if base.ndim == 2 else base
    level = normalized_map(anomaly_map, pixel_offset) * (len(_RAMP) - 1)
    low = np.clip(np.floor(level).astype(int), 0, len(_RAMP) - 2)
    colour = _RAMP[low] + (level - low)[..., None] * (_RAMP[low + 1] - _RAMP[low])
    picture = (1 - alpha) * base + alpha * colour
    if mask is not None and mask.any():
        mask = np.asarray(mask, bool)
        inner = mask.copy()  # the outline: mask pixels with a 4-neighbour outside the mask
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        picture[mask & ~inner] = 255
    return np.clip(np.round(picture), 0, 255).astype(np.uint8)


def regions(mask: np.ndarray) -> tuple[list[list[int]], int]:
    """The defect regions of a mask: ``(boxes, area)``, each box ``[x0, y0, x1, y1]`` in pixels (x1, y1
    exclusive) of one 8-connected region, largest first; area = defect pixels in all."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return [], 0
    sizes = np.bincount(labels.ravel())[1:]
    boxes = [(int(sizes[i]), [s[1].start, s[0].start, s[1].stop, s[0].stop])
             for i, s in enumerate(ndimage.find_objects(labels))]
    return [box for _, box in sorted(boxes, key=lambda item: -item[0])], int(mask.sum())
