"""Ground-truth defect masks for a test folder, in MVTec AD's layout: the mask of ``test/<type>/<stem>.<ext>`` is
``masks/<type>/<stem>.png`` or ``masks/<type>/<stem>_mask.png``, non-zero where the defect is, the size of its
image file. Good images have none (their masks are all zero)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MASK_NAMES = ("{stem}.png", "{stem}_mask.png")


def mask_path(mask_dir, defect_type: str, stem: str) -> Path:
    """The mask file of image ``stem`` of ``defect_type``; an error naming the files looked for if none is there."""
    folder = Path(mask_dir) / defect_type
    candidates = [folder / name.format(stem=stem) for name in MASK_NAMES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no mask for the {defect_type} image {stem}: expected {candidates[0]} or "
                            f"{candidates[1].name} beside it (--mask-dir holds one mask per defect image)")


def read_mask(path, size: tuple[int, int], image_path=None) -> np.ndarray:
    """A boolean mask ``(height, width)`` from ``path``; an error naming it if unreadable or not ``size``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            mask = np.asarray(img.convert("L")) > 0
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a corrupt file
        raise ValueError(f"{path}: not a readable mask image ({type(exc).__name__}: {exc})") from exc
    if mask.shape != tuple(size):
        raise ValueError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} pixels, its image {image_path or ''} is "
                         f"{size[1]}x{size[0]}: a mask must have its image's size")
    return mask
