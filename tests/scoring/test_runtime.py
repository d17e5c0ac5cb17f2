import numpy as np
import onnxruntime as ort
import pytest
import torch

from metricad import Detector
from metricad.cli import main
from metricad.models import create_model
from metricad.preprocessing import to_model_array

# float32 graphs in two runtimes differ by accumulation order only: raw expert scores to 1e-4 relative; scores
# are means of z-scores, where that error is divided by the normal images' spread (small for untrained models).
SCORE_RTOL, Z_ATOL = 1e-4, 1e-3


def _models(name, members=1, normalize=True):
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        model = create_model(name, embedding_dim=16, normalize=normalize)
        model.set_class_centres(torch.randn(16, 3), normal_label=0)
        models.append(model)
    return models


@pytest.mark.parametrize("name,members,normalize", [("compact-cnn", 1, False), ("compact-cnn", 2, True),
                                                    ("seed-mobilenetv2", 1, False)])
def test_onnx_scores_agree_with_torch(name, members, normalize):
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 255, size=(64, 28, 28)).astype(np.uint8)
    queries = rng.integers(0, 255, size=(23, 28, 28)).astype(np.uint8)
    # Scores are means of z-scores: near zero, an absolute error is the raw error divided by the normal spread. The
    # untrained MobileNetV2 embeds all these images almost alike: z-scores of that near-zero spread are noise.
    scores = ("knn", "knn+margin", "knn+fmap+excess-margin", "pca") if name == "compact-cnn" else ("knn", "pca")
    for score in scores:
        models = _models(name, members, normalize)
        torch_det = Detector(models, k=2, device="cpu", score=score).fit(normal[:50], normal[50:])
        onnx_det = Detector(models, k=2, device="cpu", runtime="onnx", score=score).fit(normal[:50], normal[50:])
        assert onnx_det.session_ is not None  # models, experts and combiner in one ONNX graph
        (torch_scores, torch_parts), (onnx_scores, onnx_parts) = torch_det.score_parts(queries), \
            onnx_det.score_parts(queries)
        np.testing.assert_allclose(onnx_parts, torch_parts, rtol=SCORE_RTOL, atol=1e-5)
        # A score is a mean of z-scores: the parts' tolerance divided by each expert's normal spread (which is
        # float32 noise itself where an untrained model embeds every image alike).
        std = torch_det.graph_.combiner.std.cpu().numpy()
        z_atol = Z_ATOL + np.max((1e-5 + SCORE_RTOL * np.abs(torch_parts)) / std, axis=1)
        assert np.all(np.abs(onnx_scores - torch_scores) <= z_atol + SCORE_RTOL * np.abs(torch_scores)), score
        assert onnx_det.offset_ == pytest.approx(torch_det.offset_, rel=SCORE_RTOL, abs=Z_ATOL)


def test_the_bundle_scores_like_its_run_without_torch_objects(tmp_path, trained_run, capsys):
    """The exported bundle equals the run's scores (to Z_ATOL) and carries what a scorer needs as metadata; ONNX
    Runtime alone runs it."""
    from metricad.deploy.bundle import Bundle
    from metricad.run import open_run

    assert main(["export", str(trained_run), "--out", str(tmp_path / "part.onnx")]) == 0
    assert "part.onnx: input 'images'" in capsys.readouterr().out
    run = open_run(trained_run, device="cpu")
    queries = np.random.default_rng(0).integers(0, 255, (9, 28, 28)).astype(np.uint8)
    bundle = Bundle(tmp_path / "part.onnx")
    np.testing.assert_allclose(bundle.score_samples(queries), run.detector.score_samples(queries), rtol=SCORE_RTOL,
                               atol=Z_ATOL)
    assert bundle.offset_ == pytest.approx(run.detector.offset_) and bundle.score == run.detector.score
    assert bundle.model_id == run.model_id and bundle.input_spec == (1, (28, 28))
    assert bundle.metadata["preprocessing"]["mode"] == "L" and bundle.metadata["threshold_set_on"]["mode"]
    session = ort.InferenceSession(str(tmp_path / "part.onnx"), providers=["CPUExecutionProvider"])
    score, parts = session.run(None, {"images": to_model_array(queries)})
    np.testing.assert_allclose(score, bundle.score_samples(queries), rtol=1e-6)
    assert parts.shape == (9, run.config["training"]["ensemble"] * 3)  # members x (knn, fmap, margin)


def test_a_model_that_is_not_a_bundle_is_refused_by_name(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from metricad.deploy.bundle import Bundle

    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain", [value("x")], [value("y")])
    onnx.save(helper.make_model(graph), str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="plain.onnx: not a metricad model bundle"):
        Bundle(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.onnx: not a readable ONNX model"):
        Bundle(tmp_path / "junk.onnx")


def test_cli_export_and_onnx_scoring(tmp_path, trained_run, capsys):
    assert main(["export", str(trained_run), "--out", str(tmp_path / "model.onnx")]) == 0
    assert (tmp_path / "model.onnx").is_file()
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 255, (4, 28, 28)).astype(np.uint8))
    capsys.readouterr()
    scores = {}
    for runtime in ("torch", "onnx"):
        assert main(["score", str(trained_run), str(tmp_path / "x.npy"), "--runtime", runtime]) == 0
        scores[runtime] = [float(line.split(",")[1]) for line in capsys.readouterr().out.splitlines()[1:]]
    np.testing.assert_allclose(scores["onnx"], scores["torch"], rtol=SCORE_RTOL, atol=Z_ATOL)
