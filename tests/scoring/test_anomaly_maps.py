"""The anomaly map: the patch expert's distances z-scored as its image score is, upsampled where each map cell's
receptive field is centred and Gaussian-smoothed (checked against scipy); the pixel threshold set on held-out
normal images; defect masks only in images the image threshold flags."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from metricad.detector import Detector
from metricad.models import create_model
from metricad.scoring.maps import map_sigma, smooth, upsample
from metricad.thresholds import defect_masks, threshold_for


def test_aligned_upsampling_puts_cell_i_on_pixel_stride_times_i():
    maps = torch.zeros(1, 1, 4, 6)
    maps[0, 0, 2, 3] = 1.0
    aligned = upsample(maps, (32, 48), aligned=True)[0, 0]
    assert np.unravel_index(int(aligned.argmax()), (32, 48)) == (16, 24)  # stride 8: cell (2, 3) -> (16, 24)
    assert aligned[16, 24] == 1.0 and aligned[20, 24] == pytest.approx(0.5)  # bilinear between cell centres
    centred = upsample(maps, (32, 48), aligned=False)[0, 0]  # un-padded pooling: centre 8 i + 3.5
    assert centred[19:21, 27:29].mean() == pytest.approx(float(centred.max()))


def test_smoothing_is_a_gaussian_blur_with_reflected_edges():
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((2, 40, 36)).astype(np.float32))
    expected = np.stack([ndimage.gaussian_filter(m, 3.0, mode="mirror", truncate=4.0) for m in maps.numpy()])
    np.testing.assert_allclose(smooth(maps, (40, 36), sigma=3.0).numpy(), expected, atol=1e-5)
    assert map_sigma((320, 480)) == 8.0 and map_sigma((40, 36)) == pytest.approx(0.9)  # a share of the input


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(1)
    normal = np.clip(rng.normal(128, 12, (46, 128, 128)), 0, 255).astype(np.uint8)
    detector = Detector(create_model("efficientnet-lite0", input_size=(128, 128)), score="patch",
                        device="cpu").fit(normal[:36], normal[36:])
    test = np.clip(rng.normal(128, 12, (4, 128, 128)), 0, 255).astype(np.uint8)
    test[:2, 56:64, 40:48] = 250
    return detector, normal[36:], test


def test_the_map_is_the_patch_distances_in_z_units_smoothed(fitted):
    detector, _, test = fitted
    scores, maps = detector.score_with_maps(test)
    np.testing.assert_allclose(scores, detector.score_samples(test), rtol=1e-6)
    member = detector.graph_.members[0]
    with torch.no_grad():
        raw = member.experts["patch"].anomaly_map(member.views(detector.model_input(test)))
    mean, std = detector.graph_.combiner.mean[0], detector.graph_.combiner.std[0]
    z = ((raw - mean) / std).unsqueeze(1)
    # by hand: cell i of the stride-8 grid on pixel 8 i (EfficientNet pads symmetrically), scipy's blur
    grid = raw.shape[1]
    inner = torch.nn.functional.interpolate(z, size=(8 * (grid - 1) + 1,) * 2, mode="bilinear", align_corners=True)
    up = torch.nn.functional.pad(inner, (0, 7, 0, 7), mode="replicate")[:, 0].numpy()
    expected = np.stack([ndimage.gaussian_filter(m, 3.2, mode="mirror", truncate=4.0) for m in up])  # 128 / 40
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    # the image score is the unsmoothed map's worst patch, in the same units
    np.testing.assert_allclose(z.flatten(1).amax(1).numpy(), scores, rtol=1e-5, atol=1e-5)
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps[:2]]
    # on the spot, not beside it: within 1.5 cells of the stride-8 grid (the stride-16 features inside the patches
    # are upsampled as the issue-28 default was chosen with, which leaves the peak about one cell low and right)
    assert all(abs(r - 59.5) <= 12 and abs(c - 43.5) <= 12 for r, c in peaks)


def test_the_pixel_threshold_is_set_on_held_out_normal_map_values(fitted):
    detector, held_out, test = fitted
    _, maps = detector.score_with_maps(held_out)
    expected = threshold_for(maps[:, ::2, ::2].ravel(), np.zeros(maps[:, ::2, ::2].size), "contamination",
                             contamination=detector.contamination)
    assert detector.pixel_offset_ == pytest.approx(expected)
    assert detector.pixel_threshold_set_on_["images"] == "held-out normal images"
    scores, maps = detector.score_with_maps(test)
    masks = detector.predict_masks(scores, maps)
    flagged = detector.predict_scores(scores).astype(bool)
    assert flagged[:2].all() and all(masks[i, 56:64, 40:48].mean() > 0.9 for i in (0, 1))
    assert not masks[~flagged].any()  # an image the image threshold passes has no defect pixel


def test_without_held_out_images_the_anchors_left_out_set_the_pixel_threshold(fitted):
    detector, _, _ = fitted
    loo = Detector(**detector.get_params()).fit(detector.normal_images_)
    assert loo.pixel_threshold_set_on_["images"].startswith("anchors")
    assert loo.pixel_threshold_set_on_["n_pixels"] == 36 * 64 * 64  # every anchor's map, every 2nd row and column
    # an anchor left out of its own search looks like a held-out normal image: the two thresholds are close
    assert abs(loo.pixel_offset_ - detector.pixel_offset_) < 0.5 * np.ptp(detector.score_with_maps(
        detector.normal_images_[:4])[1])


def test_defect_masks_need_both_thresholds():
    maps = np.array([[[0.0, 2.0]], [[0.0, 2.0]]])
    masks = defect_masks(np.array([5.0, 1.0]), maps, threshold=3.0, pixel_threshold=1.0)
    assert masks.tolist() == [[[False, True]], [[False, False]]]


def test_a_score_without_a_patch_expert_has_no_map(fitted):
    detector, _, test = fitted
    knn = Detector(detector.model, score="knn", device="cpu").fit(detector.normal_images_[:20])
    assert not knn.has_map and knn.pixel_offset_ is None
    with pytest.raises(ValueError, match="score 'knn' has no anomaly map"):
        knn.score_with_maps(test)


def test_a_run_records_the_smoothing_its_pixel_threshold_was_set_with(fitted, tmp_path):
    import json

    from metricad.run import open_run, write_run

    detector, _, test = fitted
    run = write_run(tmp_path / "run", detector, {})
    config = json.loads((run / "config.json").read_text())
    assert config["detector"]["map"] == {"sigma_fraction": 8 / 320, "aligned_cells": True}
    np.testing.assert_allclose(open_run(run).detector.score_with_maps(test)[1], detector.score_with_maps(test)[1],
                               atol=1e-5)
    config["detector"]["map"]["sigma_fraction"] = 0.05  # as a run of another version would have recorded it
    (run / "config.json").write_text(json.dumps(config))
    reopened = open_run(run).detector
    assert reopened.graph_.map_smoothing.sigma_fraction == 0.05
    smoother = reopened.score_with_maps(test)[1]
    assert smoother.std() < detector.score_with_maps(test)[1].std()  # its own smoothing, not this version's
    # where its cells sit, too: read from the run, not derived again from the model's class
    config["detector"]["map"] = {"sigma_fraction": 8 / 320, "aligned_cells": False}
    (run / "config.json").write_text(json.dumps(config))
    unaligned = open_run(run).detector
    assert unaligned.graph_.map_smoothing.aligned_cells is False
    shifted, aligned = unaligned.score_with_maps(test)[1], detector.score_with_maps(test)[1]
    assert np.abs(shifted - aligned).max() > 0.05 * (aligned.max() - aligned.min())
    np.testing.assert_array_equal(unaligned.score_samples(test), detector.score_samples(test))  # the map alone


def test_a_patch_run_saved_before_maps_gets_its_pixel_threshold_when_opened(fitted, tmp_path):
    import json

    from metricad.run import open_run, write_run

    detector, _, _ = fitted
    run = write_run(tmp_path / "run", detector, {})
    config = json.loads((run / "config.json").read_text())
    for key in ("pixel_offset", "pixel_threshold_set_on", "map"):  # as issue 28 wrote a patch run
        del config["detector"][key]
    (run / "config.json").write_text(json.dumps(config))
    reopened = open_run(run).detector
    assert reopened.pixel_offset_ == pytest.approx(detector.pixel_offset_, rel=1e-5)
    assert reopened.pixel_threshold_set_on_["images"] == "held-out normal images"
