"""The patch-level expert against a hand computation: each patch's distance to its nearest bank patch, the image
scoring as its worst patch; a small defect moves the patch score where the image-level k-NN barely moves; and
the ONNX bundle scores as the run does."""

import numpy as np
import pytest
import torch

from metricad.detector import Detector
from metricad.models import create_model
from metricad.scoring.experts.patch import PatchKnn, patch_maps


def _views(local, last):
    return {"local": local, "features": last}


def test_patch_scores_by_hand():
    generator = torch.Generator().manual_seed(0)
    local, last = torch.randn(3, 4, 6, 6, generator=generator), torch.randn(3, 2, 3, 3, generator=generator)
    expert = PatchKnn(bank_size=10_000).fit(None, patch_maps(_views(local, last)))
    assert expert.bank.shape == (3 * 36, 6) and expert.grid.tolist() == [6, 6]  # every patch kept
    queries = torch.randn(2, 4, 6, 6, generator=generator), torch.randn(2, 2, 3, 3, generator=generator)
    maps = patch_maps(_views(*queries))
    # by hand: upsampled last map concatenated, 3x3 mean (borders over the pixels inside), nearest bank patch
    up = torch.nn.functional.interpolate(queries[1], size=(6, 6), mode="bilinear", align_corners=False)
    both = torch.cat([queries[0], up], 1)
    i, j = 0, 5  # a border patch: its 3x3 window holds 2 x 3 positions
    window = both[:, :, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].mean(dim=(2, 3))
    torch.testing.assert_close(maps[:, :, i, j], window)
    patches = maps.permute(0, 2, 3, 1).reshape(2, 36, 6)
    nearest = torch.cdist(patches, expert.bank.unsqueeze(0).expand(2, -1, -1)).min(2).values
    torch.testing.assert_close(expert.anomaly_map(_views(*queries)).reshape(2, 36), nearest, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(expert(_views(*queries)), nearest.max(1).values, rtol=1e-4, atol=1e-4)


def test_the_bank_is_a_coreset_and_the_leave_one_out_scores_exclude_the_image_itself():
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(5, 3, 4, 4, generator=generator)
    expert = PatchKnn(bank_size=20).fit(None, maps)
    assert expert.bank.shape == (20, 3)
    same = maps.clone()
    same[1] = same[0]  # image 1 repeats image 0: left out, image 0 still finds image 1's patches
    loo = PatchKnn(bank_size=80).fit(None, same).anchor_scores()
    assert loo[0] == pytest.approx(0.0, abs=1e-3) and loo[1] == pytest.approx(0.0, abs=1e-3)
    assert (loo[2:] > 0.1).all()


def test_the_anomaly_map_points_at_a_small_defect():
    """A 4x4 square (under 0.2 % of a 96x96 image) lights the patch map's cell where it is, image after image."""
    rng = np.random.default_rng(0)
    normal = rng.integers(90, 130, (70, 96, 96)).astype(np.uint8)
    detector = Detector(create_model("efficientnet-lite0", input_size=(96, 96)), score="patch",
                        device="cpu").fit(normal[:40], normal[40:50])
    defective = normal[50:].copy()
    defective[:, 40:44, 64:68] = 200
    expert = detector.graph_.members[0].experts["patch"]
    with torch.no_grad():
        maps = expert.anomaly_map(detector.graph_.members[0].views(detector.model_input(defective)))
    assert maps.shape == (20, 12, 12)  # the stride-8 grid
    rows, cols = np.unravel_index(maps.flatten(1).argmax(1).numpy(), (12, 12))
    assert np.mean((np.abs(rows - 5) <= 1) & (np.abs(cols - 8) <= 1)) >= 0.9  # pixels 40-44, 64-68: cell (5, 8)
    assert detector.score_samples(defective).mean() > detector.score_samples(normal[50:]).max()


def test_the_bundle_scores_a_patch_run_as_the_run_does(tmp_path):
    from metricad.deploy.bundle import Bundle
    from metricad.deploy.export import export_run
    from metricad.run import open_run, write_run

    rng = np.random.default_rng(3)
    normal = rng.integers(60, 160, (30, 48, 48)).astype(np.uint8)
    test = normal[:8].copy()
    test[:4, 10:18, 10:18] = 255
    detector = Detector(create_model("efficientnet-lite0", input_size=(48, 48)), score="patch", device="cpu",
                        bank_size=300).fit(normal[8:24], normal[24:])
    run = write_run(tmp_path / "run", detector, {})
    export_run(run, tmp_path / "patch.onnx")
    bundle, expected = Bundle(tmp_path / "patch.onnx"), open_run(run).detector.score_samples(test)
    assert np.ptp(expected) > 0.5
    np.testing.assert_allclose(bundle.score_samples(test), expected, rtol=1e-4, atol=1e-4 * np.ptp(expected))
    assert bundle.batch_size == min(512, detector.graph_.max_batch)
