"""The service returns where the defect is on request: ``POST /score?map=png`` (the 16-bit map at the upload's
own resolution), ``?map=mask``, ``?map=overlay``, the score in headers, equal to the run's; a request for a map
from a score without one, or for several images at once, is refused with the reason."""

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from metricad.data import load_images
from metricad.localization import normalized_map, to_size
from metricad.run import open_run
from metricad.serve import ServiceLimits, create_app
from tests.serve.helpers import ready


@pytest.fixture(scope="module")
def client(patch_run):
    run, _ = patch_run
    with TestClient(create_app(run, ServiceLimits(max_batch=4, max_body_bytes=100_000), device="cpu")) as client:
        yield ready(client)


def _spot(patch_run) -> Path:
    return sorted((patch_run[1] / "test" / "spot").glob("*.png"))[2]


def test_a_png_request_returns_the_map_at_the_uploads_resolution(client, patch_run):
    path = _spot(patch_run)
    response = client.post("/score?map=png", content=path.read_bytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    detector = open_run(patch_run[0], device="cpu").detector
    _, image = load_images([path], *reversed(detector.input_spec))
    scores, maps = detector.score_with_maps(image)
    assert float(response.headers["x-metricad-score"]) == pytest.approx(float(scores[0]), rel=1e-4, abs=1e-4)
    assert response.headers["x-metricad-label"] == "anomaly"
    levels = np.asarray(Image.open(io.BytesIO(response.content))).astype(np.float64) / 65535
    assert levels.shape == (60, 80)  # the upload's size, not the model's 48x64
    np.testing.assert_allclose(levels, normalized_map(to_size(maps[0], (60, 80)), detector.pixel_offset_),
                               atol=2 / 65535)
    assert int(response.headers["x-metricad-defect-pixels"]) > 0


def test_the_mask_and_the_overlay(client, patch_run):
    data = _spot(patch_run).read_bytes()
    mask = client.post("/score?map=mask", content=data, headers={"Content-Type": "image/png"})
    picture = np.asarray(Image.open(io.BytesIO(mask.content)))
    assert set(np.unique(picture)) <= {0, 255} and int((picture > 0).sum()) == int(
        mask.headers["x-metricad-defect-pixels"])
    overlay = client.post("/score?map=overlay", content=data, headers={"Content-Type": "image/png"})
    assert Image.open(io.BytesIO(overlay.content)).mode == "RGB"
    good = sorted((patch_run[1] / "test" / "good").glob("*.png"))[0].read_bytes()
    normal = client.post("/score?map=mask", content=good, headers={"Content-Type": "image/png"})
    if normal.headers["x-metricad-label"] == "normal":  # a normal-looking image has no defect pixel
        assert not np.asarray(Image.open(io.BytesIO(normal.content))).any()


def test_map_requests_are_refused_with_their_reason(client, trained_run, patch_run):
    data = _spot(patch_run).read_bytes()
    wrong = client.post("/score?map=jpeg", content=data, headers={"Content-Type": "image/png"})
    assert wrong.status_code == 400 and "png, mask, overlay" in wrong.json()["detail"]
    two = client.post("/score?map=png", files=[("files", ("a.png", data)), ("files", ("b.png", data))])
    assert two.status_code == 400 and "send one image" in two.json()["detail"]
    with TestClient(create_app(trained_run, device="cpu")) as plain:
        refused = ready(plain).post("/score?map=png", content=data, headers={"Content-Type": "image/png"})
    assert refused.status_code == 400 and "has no anomaly map" in refused.json()["detail"]
    assert client.post("/score", content=data, headers={"Content-Type": "image/png"}).json()["results"][0]["label"]
