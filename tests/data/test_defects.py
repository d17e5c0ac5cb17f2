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
