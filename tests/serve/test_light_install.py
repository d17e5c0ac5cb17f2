"""The light install: a model bundle is scored and served with the training stack unimportable (torch,
torchvision, scikit-learn, pytorch-metric-learning, matplotlib, onnx made to fail on import), in a subprocess.
A command that needs the training stack says which extra to install."""

import io
import json
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from PIL import Image

from metricad.run import open_run
from tests.serve.helpers import PRELUDE, free_port, light, start_service


@pytest.fixture(scope="module")
def bundle(trained_run, tmp_path_factory):
    from metricad.cli import main

    path = tmp_path_factory.mktemp("bundle") / "part.onnx"
    assert main(["export", str(trained_run), "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    images = np.random.default_rng(3).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    return images, [str(folder / f"{i}.png") for i in range(3)]


def test_a_bundle_scores_without_torch_as_the_run_does(bundle, pngs, trained_run):
    images, files = pngs
    result = light("score", str(bundle), *files)
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()[1:]]
    expected = open_run(trained_run, device="cpu").detector
    np.testing.assert_allclose([float(r[1]) for r in rows], expected.score_samples(images), rtol=1e-4, atol=1e-3)
    assert [r[2] for r in rows] == ["anomaly" if f else "normal" for f in expected.predict(images)]


def test_training_without_its_extra_says_which_to_install(tmp_path, bundle):
    result = light("train", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "needs the 'train' extra" in result.stderr
    assert "pip install 'metricad[train]'" in result.stderr and not (tmp_path / "run").exists()
    result = light("score", str(tmp_path / "nothing.onnx"), str(bundle))
    assert result.returncode == 2 and "nothing.onnx: no such model bundle" in result.stderr


def _png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_bundle_is_served_without_torch(bundle, pngs, trained_run):
    images, _ = pngs
    port = free_port()
    code = PRELUDE + f"\nsys.exit(main(['serve', {str(bundle)!r}, '--port', '{port}']))\n"
    server = start_service([sys.executable, "-c", code], port, stderr=subprocess.PIPE, text=True)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=_png(images[0]),
                                         headers={"Content-Type": "image/png"})
        body = json.loads(urllib.request.urlopen(request, timeout=30).read())
        expected = open_run(trained_run, device="cpu").detector.score_samples(images[:1])[0]
        assert body["results"][0]["score"] == pytest.approx(expected, rel=1e-4, abs=1e-3)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert f'metricad_images_scored_total{{model_id="{body["model_id"]}"}} 1.0' in metrics
    finally:
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so that a supervisor sees it.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "stopped after answering every accepted request" in server.stderr.read()
