"""A localisation check anyone can run: ``metricad make-defects GOOD_DIR --out DIR`` pastes synthetic defects
(``metricad.data.defects``, each with its exact mask) on half of a folder of good images that no run trained on,
and writes the result in MVTec AD's layout for ``metricad evaluate RUN --test-dir DIR/test --mask-dir DIR/masks``:

    DIR/test/good/<stem>.png        the other half, unchanged
    DIR/test/<kind>/<stem>.png      a defective copy, one kind per image in turn
    DIR/masks/<kind>/<stem>_mask.png  255 where the defect was pasted and changed the image visibly

A mask marks the pixels of the pasted shape whose neighbourhood (5x5) changed by ``VISIBLE`` grey levels or more
on average: darkening a black background changes nothing, and a mask over unchanged pixels would ask a detector
to see what is not there; the neighbourhood keeps a textured defect whole rather than a sieve of the pixels that
happened to change (a defect that changed nothing visibly is drawn again, up to ``TRIES`` times); a crack, one to
three pixels wide, keeps the pixels that changed by ``VISIBLE`` themselves too. Images keep their
own size and mode (grey or RGB); the set is written into a temporary sibling and renamed when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from metricad.data.defects import DEFECTS, blend, box_blur
from metricad.data.images import list_image_files

VISIBLE, TRIES = 8, 20  # grey levels a pixel must change by to count as defective; draws per image
LINES = ("crack",)  # thin by construction: a pixel of one counts by its own change too


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            grey = img.mode in ("1", "L", "I", "I;16", "F")
            array = np.asarray(img.convert("L" if grey else "RGB"), np.uint8)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a corrupt file
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    return array if grey else array.transpose(2, 0, 1)


def _save(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array if array.ndim == 2 else array.transpose(1, 2, 0)).save(path)


def write_defect_test_set(good_dir, out, kinds=tuple(DEFECTS), seed: int = 0) -> dict[str, int]:
    """Write the check set (module docstring) from the images under ``good_dir``; returns images per folder."""
    kinds = list(kinds)
    unknown = [kind for kind in kinds if kind not in DEFECTS]
    if not kinds or unknown:
        raise ValueError(f"defect kinds must be among {', '.join(DEFECTS)}, got {kinds}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists: choose another --out")
    paths = [Path(p) for p in list_image_files([good_dir])]
    stems = [p.stem for p in paths]
    if len(set(stems)) < len(stems):
        twice = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(f"{good_dir}: two images are named {twice!r} (in different folders): the check set names "
                         "each image by its stem")
    if len(paths) < 2:
        raise ValueError(f"{good_dir}: needs at least two good images (half stay good, half get a defect)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    keep, defective = sorted(order[:len(paths) // 2]), sorted(order[len(paths) // 2:])
    counts = {"good": len(keep)} | {kind: 0 for kind in kinds}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for i in keep:
            _save(_read(paths[i]), tmp / "test" / "good" / f"{paths[i].stem}.png")
        for n, i in enumerate(defective):
            kind, image = kinds[n % len(kinds)], _read(paths[i])
            changed, mask = _visible_defect(kind, image, [paths[j] for j in keep if j != i], rng, paths[i])
            _save(changed, tmp / "test" / kind / f"{paths[i].stem}.png")
            _save(mask.astype(np.uint8) * 255, tmp / "masks" / kind / f"{paths[i].stem}_mask.png")
            counts[kind] += 1
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def _visible_defect(kind: str, image: np.ndarray, others: list[Path], rng, path: Path):
    """``(defective image, mask of its visibly changed pixels)``, drawn again while nothing visible changed."""
    for _ in range(TRIES):
        if kind == "blend":  # a texture from another good image of the same size, as training's defects do
            other = _read(others[int(rng.integers(len(others)))]) if others else image
            changed, mask = blend(image, rng, other if other.shape == image.shape else None)
        else:
            changed, mask = DEFECTS[kind](image, rng)
        difference = np.abs(changed.astype(np.float32) - image.astype(np.float32))
        difference = difference if difference.ndim == 2 else difference.max(0)
        visible = mask & (box_blur(difference[None], 2)[0] >= VISIBLE)
        if kind in LINES:  # a 1-3 px line's 5x5 mean is a fifth of its change: its own pixels count by theirs
            visible |= mask & (difference >= VISIBLE)
        if visible.any():
            return changed, visible
    raise ValueError(f"{path}: {TRIES} {kind} defects changed no pixel by {VISIBLE} grey levels (a blank image?)")
