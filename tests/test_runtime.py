import numpy as np
import onnxruntime as ort
import pytest
import torch

from metricad import Detector
from metricad.class_margin import ClassMargin
from metricad.cli import main
from metricad.models import create_model
from metricad.preprocessing import to_model_array
from metricad.runtime import export_onnx

# float32 models in two runtimes differ by accumulation order only.
SCORE_RTOL, SCORE_ATOL = 1e-4, 1e-5


@pytest.mark.parametrize("name,normalize", [("compact-cnn", False), ("compact-cnn", True),
                                            ("seed-mobilenetv2", False)])
def test_onnx_scores_agree_with_torch(name, normalize):
    torch.manual_seed(0)
    model = create_model(name, embedding_dim=16, normalize=normalize)
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 255, size=(64, 28, 28)).astype(np.uint8)
    queries = rng.integers(0, 255, size=(23, 28, 28)).astype(np.uint8)
    margin = ClassMargin(torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), normal_label=0)
    # The margin scores are sums of z-scores: near zero, its absolute error is the distances' divided by their std. The
    # untrained MobileNetV2 embeds all these images almost alike: z-scores of that near-zero spread are noise.
    scores = (("knn", SCORE_ATOL), ("knn+margin", 1e-4), ("knn+excess-margin", 1e-4)) if name == "compact-cnn" else (("knn", SCORE_ATOL),)
    for score, atol in scores:
        torch_det = Detector(model, k=2, device="cpu", score=score).fit(normal, margin)
        onnx_det = Detector(model, k=2, device="cpu", runtime="onnx", score=score).fit(normal, margin)
        assert onnx_det.scorer_ is not None  # embedding, k-NN (and margin) fused in one ONNX graph
        np.testing.assert_allclose(onnx_det.score_samples(queries), torch_det.score_samples(queries),
                                   rtol=SCORE_RTOL, atol=atol)
        assert onnx_det.offset_ == pytest.approx(torch_det.offset_, rel=SCORE_RTOL)


def test_exported_file_runs_on_its_own(tmp_path):
    model = create_model("compact-cnn", embedding_dim=8).eval()
    export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    (out,) = session.run(None, {"images": x})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_cli_export_and_onnx_scoring(tmp_path, fake_fashion_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--data-dir", str(fake_fashion_dir), "--epochs", "1",
                 "--batch-size", "32", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    assert "model.onnx: input 'images'" in capsys.readouterr().out and (run / "model.onnx").is_file()
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 255, (4, 28, 28)).astype(np.uint8))
    scores = {}
    for runtime in ("torch", "onnx"):
        assert main(["score", str(run), str(tmp_path / "x.npy"), "--runtime", runtime]) == 0
        scores[runtime] = [float(line.split(",")[1]) for line in capsys.readouterr().out.splitlines()[1:]]
    np.testing.assert_allclose(scores["onnx"], scores["torch"], rtol=SCORE_RTOL, atol=SCORE_ATOL)


def test_fused_onnx_knn_finds_the_same_neighbours_as_the_index():
    torch.manual_seed(0)
    model = create_model("compact-cnn", embedding_dim=16)
    rng = np.random.default_rng(1)
    normal = rng.integers(0, 255, size=(200, 28, 28)).astype(np.uint8)
    queries = rng.integers(0, 255, size=(17, 28, 28)).astype(np.uint8)
    detector = Detector(model, k=3, device="cpu", runtime="onnx").fit(normal)
    assert detector.scorer_ is not None  # the fused path is the one under test
    outputs = detector.scorer_(to_model_array(queries))
    distances, indices = outputs["distances"], outputs["indices"]
    index_distances, index_indices = detector.index_.search(detector.embed(queries), 3)
    np.testing.assert_array_equal(indices, index_indices.numpy())
    np.testing.assert_allclose(distances, index_distances.numpy(), rtol=SCORE_RTOL, atol=SCORE_ATOL)
