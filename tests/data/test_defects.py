"""Synthetic defects change the image inside their mask and nowhere else, reproducibly, for grey and RGB."""

import numpy as np
import pytest

from metricad.data.defects import DEFECTS, add_defect_classes, make_defects, perlin


@pytest.mark.parametrize("kind", sorted(DEFECTS))
@pytest.mark.parametrize("shape", [(64, 80), (3, 48, 48)])
def test_a_defect_changes_its_mask_only(kind, shape):
    rng = np.random.default_rng(0)
    images = rng.integers(60, 200, (6, *shape)).astype(np.uint8)
    defective, masks, which = make_defects(images, [kind], seed=4)
    assert defective.shape == images.shape and masks.shape == (6, *shape[-2:]) and (which == 0).all()
    for image, out, mask in zip(images, defective, masks):
        assert 0 < mask.mean() < 0.5
        diff = out != image
        changed = diff if diff.ndim == 2 else diff.any(0)
        assert not changed[~mask].any()  # nothing outside the mask
        assert changed[mask].mean() > 0.3  # most of the mask visibly changed
    again = make_defects(images, [kind], seed=4)[0]
    np.testing.assert_array_equal(defective, again)


def test_defect_classes_follow_the_labels():
    images = np.random.default_rng(1).integers(0, 255, (10, 32, 32)).astype(np.uint8)
    labels = np.array([0] * 6 + [1] * 4)
    out, out_labels = add_defect_classes(images, labels, 0, ["cutpaste", "scar"], seed=0)
    assert len(out) == 10 + 2 * 6 and out_labels.tolist() == labels.tolist() + [2] * 6 + [3] * 6
    with pytest.raises(ValueError, match="unknown defect kind"):
        make_defects(images, ["dent"])


def test_perlin_noise_is_smooth_and_bounded():
    noise = perlin((64, 64), (4, 4), np.random.default_rng(0))
    assert np.abs(noise).max() <= 1.01 and noise.std() > 0.1
    assert np.abs(np.diff(noise, axis=1)).max() < 0.2  # neighbours close: noise, not static


def _surface(seed: int = 0, shape=(120, 160)) -> np.ndarray:
    """A mid-grey textured surface (Perlin at two scales), as an inspection image's background is."""
    rng = np.random.default_rng(seed)
    texture = 20 * perlin(shape, (3, 4), rng) + 8 * perlin(shape, (24, 32), rng)
    return np.clip(128 + texture, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(5))
def test_the_inspection_kinds_look_like_what_they_are_named(seed):
    """Each kind's shape, by its mask and what it did to the pixels: a crack is thin and long, a mura large,
    smooth and faint, a pit small and round with a dark core and a bright rim, an edge chip dark and on the
    border, a stain a soft blob."""
    image = _surface(seed)
    height, width = image.shape
    rng = np.random.default_rng(seed)
    out, mask = DEFECTS["crack"](image, rng)
    ys, xs = np.nonzero(mask)
    assert mask.mean() < 0.04 and max(np.ptp(ys), np.ptp(xs)) >= 0.15 * width  # thin and long
    solid = mask[:-4, :-4] & mask[4:, 4:] & mask[:-4, 4:] & mask[4:, :-4] & mask[2:-2, 2:-2]
    assert solid.sum() <= 0.1 * mask.sum()  # hardly a pixel with the crack 5 px around it: lines, not areas
    out, mask = DEFECTS["mura"](image, rng)
    change = out.astype(float) - image
    assert 0.05 <= mask.mean() <= 0.45 and np.abs(change).max() <= 0.21 * 255  # large, at most a fifth
    assert np.abs(np.diff(change, axis=1)).max() <= 3 and np.abs(np.diff(change, axis=0)).max() <= 3  # smooth
    out, mask = DEFECTS["pit"](image, rng)
    change = out.astype(float) - image
    assert 0 < mask.mean() < 0.02 and (change[mask] < 0).mean() > 0.2 and (change[mask] > 0).mean() > 0.2
    out, mask = DEFECTS["edge"](image, rng)
    border = np.r_[mask[0], mask[-1], mask[:, 0], mask[:, -1]]
    assert border.any() and 0 < mask.mean() < 0.1 and out[mask].mean() < 0.5 * image[mask].mean()
    out, mask = DEFECTS["stain"](image, rng)
    change = np.abs(out.astype(float) - image)
    assert 0 < mask.mean() < 0.15 and change[mask].mean() > 5
