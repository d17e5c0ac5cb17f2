import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from metricad import Detector
from metricad.cli import main
from metricad.evaluate.explain import explain
from metricad.models import create_model


@pytest.fixture(scope="module")
def detector_and_defects():
    """Anchors: 50 normal images. Defects: pasted on 20 *other* normal images, so that the nearest anchor is a
    different image and the heat-map must find the defect among all the ways two normal images differ."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 30, (70, 28, 28), dtype=np.uint8)
    normal[:, 6:22, 8:20] += 150  # an "object" on every normal image
    detector = Detector(create_model("compact-cnn"), score="knn", device="cpu").fit(normal[:50])
    defective, boxes = normal[50:].copy(), []
    for i in range(20):
        top, left = rng.integers(0, 22, 2)
        defective[i, top:top + 6, left:left + 6] = 255 - defective[i, top:top + 6, left:left + 6]
        boxes.append((top, left))
    return detector, defective, np.array(boxes)


@pytest.mark.parametrize("method", ["feature-diff", "gradcam"])
def test_explanations_have_the_image_shape_and_the_detector_scores(detector_and_defects, method):
    detector, defective, _ = detector_and_defects
    explanation = explain(detector, defective[:5], method=method)
    assert explanation.heatmaps.shape == (5, 28, 28)
    assert explanation.heatmaps.min() >= 0 and np.allclose(explanation.heatmaps.max(axis=(1, 2)), 1)
    np.testing.assert_allclose(explanation.scores, detector.score_samples(defective[:5]), rtol=1e-5)
    # The nearest anchor by brute force in numpy, not by the index explain() itself searches with.
    member = detector.graph_.members[0]
    with torch.no_grad():
        queries = member.model(detector.model_input(defective[:5])).numpy()
        anchors = member.model(detector.model_input(detector.normal_images_[detector.anchor_indices_])).numpy()
    nearest = ((queries[:, None] - anchors[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(explanation.nearest_anchor, nearest)


def test_feature_difference_points_at_a_pasted_defect(detector_and_defects):
    detector, defective, boxes = detector_and_defects
    heatmaps = explain(detector, defective).heatmaps
    peaks = np.array(np.unravel_index(heatmaps.reshape(len(heatmaps), -1).argmax(1), (28, 28))).T
    near = np.all((peaks >= boxes - 1) & (peaks < boxes + 7), axis=1)  # inside the defect, 1 px tolerance
    # A random point would land there about 8 % of the time (64 of 784 pixels).
    assert near.mean() >= 0.8, near.mean()


def test_unknown_method_is_refused(detector_and_defects):
    with pytest.raises(ValueError, match="method must be one of"):
        explain(detector_and_defects[0], detector_and_defects[1][:1], method="magic")


def test_cli_explain_writes_one_figure_per_image(trained_run, tmp_path, capsys):
    files = []
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    out = tmp_path / "explained"
    assert main(["explain", str(trained_run), *files, "--out", str(out)]) == 0
    rows = (out / "explanations.csv").read_text().splitlines()
    assert rows[0] == "path,score,label,nearest_anchor,figure" and len(rows) == 3
    for row in rows[1:]:
        figure = row.split(",")[-1]
        assert Image.open(figure).size[0] > 300  # three panels


def test_report_is_self_contained_and_renders_in_a_headless_browser(trained_run, fake_fashion_dir, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(trained_run), "--data-dir", str(fake_fashion_dir), "--out", str(out)]) == 0
    page = out.read_text()
    for part in ("ROC AUC", "Confusion matrix at the threshold", "most normal-looking anomalies", "precision"):
        assert part in page
    sources = re.findall(r"src=['\"]([^'\"]*)", page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)  # nothing external
    assert "http://" not in page and "https://" not in page
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no headless browser: scripts/setup.sh installs chromium-headless-shell")
        pytest.skip("no headless browser installed (scripts/setup.sh installs chromium-headless-shell)")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--hide-scrollbars", "--window-size=1000,1800",
                    f"--screenshot={shot}", out.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1800, 1000)
    assert pixels.std() > 20  # figures and text drawn, not a blank page
    assert (pixels < 128).mean() > 0.01
