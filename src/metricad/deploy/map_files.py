"""``metricad score TARGET FILES --maps DIR``: each image's score and, beside it, where: its anomaly map at the
file's own resolution (``<stem>_map.png``, 16-bit, or ``<stem>_map.tiff``, float32) and ``<stem>_overlay.png``
(the map over the image, the defect mask outlined). Torch-free with a bundle. Files keep their folders under
DIR (relative to the folder they all share), so ``test/crack/000.png`` and ``test/good/000.png`` do not collide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from metricad.localization import at_file_size, overlay, require_map, write_map

CHUNK = 32  # images decoded, scored and written at a time: memory stays flat over a folder of any size


@dataclass
class Located:
    """One image scored with its map at the file's resolution."""

    name: str
    score: float
    is_anomaly: bool
    anomaly_map: np.ndarray  # (height, width) of the file
    mask: np.ndarray  # bool, same shape


def locate(scorer, files: list[str], chunk: int = CHUNK):
    """Yield a ``Located`` and the file at its own size (grey ``(H, W)`` or RGB ``(H, W, 3)``, for the overlay)
    per file, ``chunk`` files per scoring call; each file is decoded once."""
    from metricad.data.images import read_image, resized

    require_map(scorer)
    channels, size = scorer.input_spec
    for start in range(0, len(files), chunk):
        names = files[start:start + chunk]
        originals = [read_image(Path(name), None, channels) for name in names]
        scores, maps = scorer.score_with_maps(np.stack([resized(o, size, channels) for o in originals]))
        flagged = scorer.predict_scores(scores).astype(bool)
        for name, original, score, is_anomaly, small in zip(names, originals, scores, flagged, maps):
            original = original if original.ndim == 2 else original.transpose(1, 2, 0)
            full, mask = at_file_size(scorer, score, small, original.shape[:2])
            yield Located(name, float(score), bool(is_anomaly), full, mask), original


def output_stems(files: list[str], out_dir: Path) -> dict[str, Path]:
    """``{file: out_dir/<its folder relative to the files' common folder>/<stem>}``."""
    parents = [os.path.dirname(os.path.abspath(f)) for f in files]
    common = os.path.commonpath(parents) if parents else ""
    return {f: out_dir / os.path.relpath(parent, common) / Path(f).stem for f, parent in zip(files, parents)}


def write_maps(scorer, files: list[str], out_dir, fmt: str = "png"):
    """Score ``files``, write each one's map and overlay under ``out_dir``; yield ``(Located, map path, overlay
    path)`` per file as it is written."""
    from PIL import Image

    from metricad.files import atomic_write

    if any(Path(f).suffix.lower() == ".npy" for f in files):
        raise ValueError("--maps writes one map per image file: pass image files, not a .npy batch")
    stems = output_stems(files, Path(out_dir))
    for located, original in locate(scorer, files):
        stem = stems[located.name]
        stem.parent.mkdir(parents=True, exist_ok=True)
        map_path = write_map(stem.with_name(f"{stem.name}_map.{fmt}"), located.anomaly_map, scorer.pixel_offset_,
                             fmt)
        picture = Image.fromarray(overlay(original, located.anomaly_map, scorer.pixel_offset_, located.mask))
        overlay_path = stem.with_name(f"{stem.name}_overlay.png")
        atomic_write(overlay_path, partial(picture.save, format="PNG"))
        yield located, map_path, overlay_path
