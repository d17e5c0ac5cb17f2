"""What a user trains is what the line scores: runs of other shapes than Fashion-MNIST's (RGB and non-square; a
grey folder run at a size of its own) exported, scored and served without torch, equal to the run; a faiss-index
run exported as an exact search over its anchors; and every broken run or bundle refused with the file named."""

import json
import shutil
import signal
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from metricad.cli import main
from metricad.data.folders import read_images
from metricad.data.images import list_image_files
from metricad.run import open_run
from tests.data.test_folders import make_folders
from tests.serve.helpers import PRELUDE, free_port, light, start_service

TRAIN = ["--preset", "default", "--epochs", "2", "--batch-size", "16", "--device", "cpu"]


RAW_NOISE = 1e-4  # float32 noise of a raw expert score on unit-length embeddings, torch against ONNX Runtime


def assert_same_scores(actual, expected, detector):
    """Equal to float32 precision. The two runtimes compute convolutions and sums in other orders: a raw expert
    score (a k-NN distance of unit-length embeddings) differs by up to ``RAW_NOISE``, and the z-scoring divides it
    by the normal images' spread, tiny on these noise images (6e-5 for one k-NN distance, measured 2026-12-06: a
    0.10 difference in the score of a good image). So the tolerance is that noise carried through the run's own
    normalisation (the score is the mean of the parts' z-scores), beside a part of the scores' range."""
    assert np.ptp(expected) > 0.5  # the images differ: equal scores are not equal constants
    carried = float(np.mean(RAW_NOISE / detector.graph_.combiner.std.numpy()))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.ptp(expected) + carried)


@pytest.fixture(scope="module", params=["rgb-20x24", "grey-40x32"])
def folder_run(request, tmp_path_factory):
    """A folder run with its bundle and a few test files: RGB 20x24 images at their own size, or grey 20x24
    images trained at ``--image-size 40,32`` (neither square nor 28x28; the fmap expert pools to other grids)."""
    root = tmp_path_factory.mktemp(request.param)
    rgb = request.param.startswith("rgb")
    data = make_folders(root / "data", np.random.default_rng(4), n=40, mode="RGB" if rgb else "L")
    run, bundle = root / "run", root / "part.onnx"
    size = [] if rgb else ["--image-size", "40,32"]
    assert main(["train", "--out", str(run), "--normal-dir", str(data / "normal"), "--reference-dir",
                 str(data / "reference"), *size, *TRAIN]) == 0
    assert open_run(run).detector.input_spec == ((3, (20, 24)) if rgb else (1, (40, 32)))
    assert main(["export", str(run), "--out", str(bundle)]) == 0
    files = sorted(str(p) for p in list_image_files([data / "test"]))[::4]
    return run, bundle, files


def test_a_folder_run_is_scored_without_torch_as_the_run_scores(folder_run):
    run, bundle, files = folder_run
    detector = open_run(run, device="cpu").detector
    images = read_images([Path(f) for f in files], *reversed(detector.input_spec))[0]
    expected = detector.score_samples(images)
    result = light("score", str(bundle), *files)
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == files
    assert_same_scores([float(r[1]) for r in rows], expected, detector)
    assert [r[2] for r in rows] == ["anomaly" if f else "normal" for f in detector.predict(images)]


def test_a_folder_run_is_served_without_torch_as_the_run_scores(folder_run):
    run, bundle, files = folder_run
    detector = open_run(run, device="cpu").detector
    images = read_images([Path(f) for f in files[:6]], *reversed(detector.input_spec))[0]
    port = free_port()
    code = PRELUDE + f"\nsys.exit(main(['serve', {str(bundle)!r}, '--port', '{port}']))\n"
    server = start_service([sys.executable, "-c", code], port)
    try:
        parts = b"".join(
            b"--xx\r\nContent-Disposition: form-data; name=\"files\"; filename=\"%d.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n%s\r\n" % (i, open(f, "rb").read()) for i, f in enumerate(files[:6]))
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=parts + b"--xx--\r\n",
                                         headers={"Content-Type": "multipart/form-data; boundary=xx"})
        body = json.loads(urllib.request.urlopen(request, timeout=30).read())
        info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10).read())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    channels, (height, width) = detector.input_spec
    assert info["input"] == {"channels": channels, "height": height, "width": width}
    assert_same_scores([r["score"] for r in body["results"]], detector.score_samples(images), detector)


@pytest.mark.parametrize("index", ["faiss-flat", "faiss-ivf"])
def test_a_faiss_run_is_exported_as_an_exact_search_over_its_anchors(index, tmp_path, fake_fashion_dir, capsys):
    pytest.importorskip("faiss")
    run, bundle = tmp_path / "run", tmp_path / "part.onnx"
    assert main(["train", "--out", str(run), "--data-dir", str(fake_fashion_dir), "--epochs", "1", "--batch-size",
                 "32", "--device", "cpu", "--index", index]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(bundle)]) == 0
    assert f"the run's {index} index is exported as an exact search" in capsys.readouterr().out
    from metricad.deploy.bundle import Bundle

    queries = np.random.default_rng(1).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    scores, parts = Bundle(bundle).score_parts(queries)  # not the constant a traced faiss search would give
    # The raw expert scores are those of the same anchors searched exactly (IVF's own search is approximate); with
    # faiss-flat, exact already, the scores are the run's own.
    exact = open_run(run, device="cpu", index="exact").detector
    np.testing.assert_allclose(parts, exact.score_parts(queries)[1], rtol=1e-4, atol=1e-5)
    if index == "faiss-flat":
        detector = open_run(run, device="cpu").detector
        assert_same_scores(scores, detector.score_samples(queries), detector)


# Broken runs and bundles: each error names the file and what is wrong with it.

@pytest.fixture
def run_copy(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def _edit_config(run, edit):
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))


def _refused(run, *message_parts):
    with pytest.raises(ValueError) as error:
        open_run(run, device="cpu")
    for part in message_parts:
        assert part in str(error.value), str(error.value)


def test_a_run_of_another_format_version_is_refused_by_name(run_copy):
    _edit_config(run_copy, lambda c: c.update(format=99))
    _refused(run_copy, str(run_copy / "config.json"), "run format 99")


def test_a_detector_that_does_not_match_its_config_is_refused_by_name(run_copy):
    _edit_config(run_copy, lambda c: c["detector"].update(score="knn+pca"))
    _refused(run_copy, str(run_copy / "detector.safetensors"), "does not match", str(run_copy / "config.json"))


def test_weights_that_do_not_match_the_model_are_refused_by_name(run_copy):
    _edit_config(run_copy, lambda c: c["models"][0]["kwargs"].update(embedding_dim=7))
    _refused(run_copy, str(run_copy / "weights.safetensors"), "do not match")


@pytest.mark.parametrize("name", ["weights.safetensors", "detector.safetensors"])
def test_a_truncated_safetensors_file_is_refused_by_name(run_copy, name):
    path = run_copy / name
    path.write_bytes(path.read_bytes()[:1000])
    _refused(run_copy, str(path), "not a readable safetensors file")


def test_a_bundle_of_another_format_version_is_refused_by_name(trained_run, tmp_path):
    import onnx

    from metricad.deploy.bundle import Bundle

    bundle = tmp_path / "part.onnx"
    assert main(["export", str(trained_run), "--out", str(bundle)]) == 0
    model = onnx.load(bundle)
    for entry in model.metadata_props:
        if entry.key == "metricad.format":
            entry.value = "metricad-bundle-99"
    onnx.save(model, bundle)
    with pytest.raises(ValueError, match="bundle format 'metricad-bundle-99'") as error:
        Bundle(bundle)
    assert str(bundle) in str(error.value)
    bundle.write_bytes(bundle.read_bytes()[:5000])  # truncated
    with pytest.raises(ValueError, match="not a readable ONNX model") as error:
        Bundle(bundle)
    assert str(bundle) in str(error.value)
