"""Synthetic defects made from good images alone, each with its pixel mask: negatives to train on and, with a
kind kept out of training, a validation set that needs no real defect.

Kinds (``DEFECTS``), after the self-supervised methods that start from good images only:
- ``cutpaste``: a rectangle of the image pasted elsewhere on it, its brightness jittered (CutPaste, Li et al. 2021);
- ``scar``: a thin rotated strip of the image pasted elsewhere (CutPaste's scar);
- ``blend``: a Perlin-noise blob through which a foreign texture shows, half transparent (DRAEM, Zavrtanik et
  al. 2021; NSA, Schlüter et al. 2022); the texture is another good image, turned and contrast-stretched, as no
  texture dataset ships with metricad;
- ``intensity``: a Perlin-noise blob darkened or brightened, and blurred (a local change of material or focus);

and the kinds a surface or part inspection meets that those do not resemble:
- ``crack``: a thin (1-3 px) branching polyline, darker or brighter than the surface, its contrast often low
  (cracks in a solar cell, scratches on a sheet);
- ``mura``: a smooth low-frequency gain field over 10-40 % of the image, a few percent to a fifth of the
  brightness (large low-contrast uneven regions: "mura" on displays, inactive areas of a cell);
- ``pit``: one to three small dark holes, each with a brighter rim;
- ``edge``: a chipped or frayed edge, a ragged bite from one side filled with the background's darkness;
- ``stain``: a soft-edged blob of foreign colour and fine texture laid over the surface.

Every function takes a uint8 image ``(H, W)`` or ``(C, H, W)`` and a numpy ``Generator`` and returns the defective
image and a boolean mask ``(H, W)``. Perlin noise is written out (``perlin``): the packages that offer it are
small, unmaintained C extensions, and it is fifteen lines of numpy.
"""

from __future__ import annotations

import numpy as np


def perlin(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient noise in about [-1, 1], ``cells`` lattice cells along each axis (Perlin 2002's fade)."""
    height, width = shape
    angles = rng.uniform(0, 2 * np.pi, (cells[0] + 1, cells[1] + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], -1)
    y, x = np.meshgrid(np.linspace(0, cells[0], height, endpoint=False),
                       np.linspace(0, cells[1], width, endpoint=False), indexing="ij")
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0

    def corner(dy, dx):
        g = gradients[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    top = corner(0, 0) + fade(fx) * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + fade(fx) * (corner(1, 1) - corner(1, 0))
    return np.sqrt(2) * (top + fade(fy) * (bottom - top))


def _as_chw(image: np.ndarray) -> np.ndarray:
    return image[None] if image.ndim == 2 else image


def _back(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).astype(np.uint8).reshape(like.shape)


def _blob(shape: tuple[int, int], rng: np.random.Generator, min_area: float = 0.005,
          max_area: float = 0.1) -> np.ndarray:
    """A Perlin-noise blob covering between ``min_area`` and ``max_area`` of the image."""
    height, width = shape
    for _ in range(20):
        cells = (int(rng.integers(2, 7)), int(rng.integers(2, 7)))
        noise = perlin(shape, cells, rng)
        mask = noise > np.quantile(noise, 1 - rng.uniform(min_area, max_area))
        if mask.any():
            return mask
    mask = np.zeros(shape, bool)
    mask[height // 3:height // 2, width // 3:width // 2] = True
    return mask


def cutpaste(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _as_chw(image).astype(np.float32)
    _, height, width = x.shape
    area = rng.uniform(0.02, 0.1) * height * width
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
    h = int(np.clip(round(np.sqrt(area * aspect)), 2, height - 1))
    w = int(np.clip(round(np.sqrt(area / aspect)), 2, width - 1))
    sy, sx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    ty, tx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    patch = x[:, sy:sy + h, sx:sx + w] * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)
    out = x.copy()
    out[:, ty:ty + h, tx:tx + w] = patch
    mask = np.zeros((height, width), bool)
    mask[ty:ty + h, tx:tx + w] = True
    return _back(out, image), mask


def scar(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _as_chw(image).astype(np.float32)
    _, height, width = x.shape
    length = rng.uniform(0.15, 0.4) * max(height, width)
    thickness = max(1.0, rng.uniform(0.01, 0.04) * min(height, width))
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    mask = (np.abs(along) <= length / 2) & (np.abs(across) <= thickness / 2)
    if not mask.any():
        mask[int(cy), int(cx)] = True
    shift = (int(rng.integers(-height // 3, height // 3 + 1)), int(rng.integers(-width // 3, width // 3 + 1)))
    source = np.roll(x, shift, axis=(1, 2)) * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
    out = np.where(mask[None], source, x)
    return _back(out, image), mask


def blend(image: np.ndarray, rng: np.random.Generator,
          texture: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``texture``: another good image of the same shape (default: this one, turned)."""
    x = _as_chw(image).astype(np.float32)
    _, height, width = x.shape
    foreign = _as_chw(texture if texture is not None else image).astype(np.float32)
    foreign = np.rot90(foreign, int(rng.integers(1, 4)), axes=(1, 2)) if height == width else foreign[:, ::-1, ::-1]
    foreign = (foreign - foreign.mean()) * rng.uniform(1.5, 3.0) + foreign.mean() + rng.uniform(-40, 40)
    mask = _blob((height, width), rng)
    opacity = rng.uniform(0.5, 0.9)
    out = np.where(mask[None], (1 - opacity) * x + opacity * foreign, x)
    return _back(out, image), mask


def intensity(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _as_chw(image).astype(np.float32)
    _, height, width = x.shape
    mask = _blob((height, width), rng)
    changed = x * rng.choice([rng.uniform(0.3, 0.7), rng.uniform(1.3, 1.8)])
    blurred = box_blur(changed, max(1, int(rng.integers(1, 4))))
    out = np.where(mask[None], blurred, x)
    return _back(out, image), mask


def box_blur(x: np.ndarray, radius: int) -> np.ndarray:
    """A separable box blur of ``(C, H, W)`` (edges repeated)."""
    size = 2 * radius + 1
    padded = np.pad(x, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    cumulative = padded.cumsum(1)
    rows = (np.concatenate([cumulative[:, size - 1:size], cumulative[:, size:] - cumulative[:, :-size]], 1)) / size
    cumulative = rows.cumsum(2)
    return np.concatenate([cumulative[:, :, size - 1:size], cumulative[:, :, size:] - cumulative[:, :, :-size]],
                          2) / size


def _walk(start, angle: float, length: int, shape, rng: np.random.Generator) -> list[tuple[float, float]]:
    """A wandering path of unit steps from ``start`` (y, x), its direction drifting a little each step, stopped at
    the image's edge."""
    (y, x), points = start, []
    for _ in range(length):
        if not (0 <= y < shape[0] and 0 <= x < shape[1]):
            break
        points.append((y, x))
        angle += rng.normal(0.0, 0.06)
        y, x = y + np.sin(angle), x + np.cos(angle)
    return points


def _stamp(points, width: int, shape) -> np.ndarray:
    """The pixels within ``width`` (a square brush, centred) of any point of a path."""
    mask = np.zeros(shape, bool)
    low, high = -((width - 1) // 2), width // 2 + 1
    for y, x in points:
        y0, x0 = int(round(y)), int(round(x))
        mask[max(0, y0 + low):max(0, y0 + high), max(0, x0 + low):max(0, x0 + high)] = True
    return mask


def crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _as_chw(image).astype(np.float32)
    _, height, width = x.shape
    width_px = int(rng.integers(1, 4)) if min(height, width) >= 96 else 1
    start = (rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width)
    trunk = _walk(start, rng.uniform(0, 2 * np.pi), int(rng.uniform(0.3, 0.8) * max(height, width)),
                  (height, width), rng)
    paths = [trunk]
    for _ in range(int(rng.integers(0, 4))):  # branches leave the trunk at an angle
        origin = trunk[int(rng.integers(len(trunk)))]
        paths.append(_walk(origin, rng.uniform(0, 2 * np.pi), int(rng.uniform(0.1, 0.4) * len(trunk)) + 2,
                           (height, width), rng))
    mask = _stamp([point for path in paths for point in path], width_px, (height, width))
    contrast = rng.uniform(0.12, 0.5)  # of the surface's own brightness: often faint
    factor = 1 - contrast if rng.random() < 0.7 else 1 + contrast
    out = np.where(mask[None], x * factor + (2.0 if factor > 1 else -2.0), x)
    return _back(out, image), mask


def mura(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _as_chw(image).astype(np.float32)
    _, height, width = x.shape
    field = perlin((height, width), (int(rng.integers(1, 3)), int(rng.integers(1, 3))), rng)
    cut = np.quantile(field, 1 - rng.uniform(0.1, 0.4))
    t = np.clip((field - cut) / max(float(field.max() - cut), 1e-6), 0, 1)
    weight = t * t * (3 - 2 * t)  # smoothstep: no edge anywhere, the change fades in
    gain = rng.uniform(0.06, 0.2) * (1 if rng.random() < 0.5 else -1)
    out = _back(x * (1 + gain * weight[None]), image)
    changed = _as_chw(out) != _as_chw(image)
    return out, changed.any(0)  # exactly the pixels it changed: faint at its rim (low contrast)


def pit(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _as_chw(image).astype(np.float32)
    _, height, width = x.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    factor, mask = np.ones((height, width), np.float32), np.zeros((height, width), bool)
    for _ in range(int(rng.integers(1, 4))):
        radius = max(1.5, rng.uniform(0.01, 0.03) * min(height, width))
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        distance = np.hypot(yy - cy, xx - cx)
        factor = np.where(distance < radius, rng.uniform(0.2, 0.55), factor)
        factor = np.where((distance >= radius) & (distance < 1.6 * radius), rng.uniform(1.15, 1.4), factor)
        mask |= distance < 1.6 * radius
    return _back(x * factor[None], image), mask


def edge(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _as_chw(image).astype(np.float32)
    _, height, width = x.shape
    side = int(rng.integers(4))  # 0 top, 1 bottom, 2 left, 3 right: the bite comes from there
    along, across = (width, height) if side < 2 else (height, width)
    span = rng.uniform(0.2, 0.5) * along
    centre = rng.uniform(span / 2, along - span / 2)
    t = np.arange(along, dtype=np.float32)
    bump = np.clip(1 - ((t - centre) / (span / 2)) ** 2, 0, None)  # a bite, deepest in the middle
    ragged = 1 + 0.3 * perlin((2, along), (1, max(2, int(along // 16))), rng)[0]  # frayed, not a smooth arc
    depth = bump * ragged * rng.uniform(0.05, 0.15) * across
    inward = np.arange(across, dtype=np.float32)[:, None]
    mask = inward < depth[None, :]  # (across, along) from the chosen side
    mask = {0: mask, 1: mask[::-1], 2: mask.T, 3: mask.T[:, ::-1]}[side]
    background = np.quantile(x, 0.02) * rng.uniform(0.1, 0.45)  # what lies under the part: darker still
    out = np.where(mask[None], background + rng.normal(0, 2, x.shape), x)
    return _back(out, image), mask


def stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _as_chw(image).astype(np.float32)
    channels, height, width = x.shape
    mask = _blob((height, width), rng, 0.01, 0.08)
    soft = box_blur(mask[None].astype(np.float32), max(1, min(height, width) // 64))[0] * mask
    texture = perlin((height, width), (int(rng.integers(6, 16)),) * 2, rng) * rng.uniform(5, 15)
    tint = rng.uniform(15, 45, (channels, 1, 1)) * (1 if rng.random() < 0.5 else -1)
    out = x + soft[None] * (tint + texture[None])
    return _back(out, image), mask


DEFECTS = {"cutpaste": cutpaste, "scar": scar, "blend": blend, "intensity": intensity, "crack": crack,
           "mura": mura, "pit": pit, "edge": edge, "stain": stain}


def make_defects(images: np.ndarray, kinds, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One defective copy of each image per kind in ``kinds``, drawn in turn: ``(images, masks, kind index)``;
    ``blend`` takes its texture from another image of the set."""
    kinds = list(kinds)
    unknown = [kind for kind in kinds if kind not in DEFECTS]
    if unknown:
        raise ValueError(f"unknown defect kind(s) {unknown}; available: {', '.join(DEFECTS)}")
    rng = np.random.default_rng(seed)
    out, masks, which = [], [], []
    for k, kind in enumerate(kinds):
        for i, image in enumerate(images):
            if kind == "blend" and len(images) > 1:
                other = images[(i + 1 + int(rng.integers(len(images) - 1))) % len(images)]
                defective, mask = blend(image, rng, other)
            else:
                defective, mask = DEFECTS[kind](image, rng)
            out.append(defective)
            masks.append(mask)
            which.append(k)
    return np.stack(out), np.stack(masks), np.array(which, np.int64)


def add_defect_classes(images: np.ndarray, labels: np.ndarray, normal_label: int | None, kinds,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training images and labels with, for each kind in ``kinds``, a defective copy of every normal image as a
    class of its own (labelled after the largest label, in the kinds' order). The inputs are not changed."""
    kinds = list(kinds)
    if not kinds:
        return images, labels
    if normal_label is None:
        raise ValueError("synthetic defects need the normal class's label")
    normals = images[np.asarray(labels) == normal_label]
    if not len(normals):
        raise ValueError(f"no training image has the normal label {normal_label}")
    defective, _, which = make_defects(normals, kinds, seed)
    return (np.concatenate([images, defective]),
            np.concatenate([np.asarray(labels), int(np.max(labels)) + 1 + which]).astype(np.asarray(labels).dtype))
