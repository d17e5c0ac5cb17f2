"""The flow expert learns a density: normal patches on a correlated manifold against anomalies whose every channel
has the normal marginal (so only the learned dependence finds them; the untrained flow, a standard normal on the
standardised patches, must fail); its run reopens and its ONNX bundle scores as the run does; without held-out
images it refuses to normalise on the images it learned from."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from metricad.detector import Detector
from metricad.models import create_model
from metricad.scoring.experts import flow as flow_module
from metricad.scoring.experts.flow import PatchFlow


def _manifold(n: int, sign: float, generator) -> torch.Tensor:
    """(n, 4, 1, 1) patches: channels 2, 3 follow channels 0, 1 (normal, sign +1) or mirror them (sign -1)."""
    a = torch.randn(n, 2, generator=generator)
    b = sign * a + 0.1 * torch.randn(n, 2, generator=generator)
    return torch.cat([a, b], 1).view(n, 4, 1, 1)


def test_the_flow_learns_what_the_standardised_distance_cannot_see():
    generator = torch.Generator().manual_seed(0)
    normal, held = _manifold(4000, 1.0, generator), _manifold(300, 1.0, generator)
    odd = _manifold(300, -1.0, generator)  # each channel's marginal is the normal one
    labels = np.r_[np.zeros(300), np.ones(300)]
    queries = torch.cat([held, odd]).view(600, 4)

    def auroc(expert):
        with torch.no_grad():
            return roc_auc_score(labels, expert.nll((queries - expert.mean) / expert.std).numpy())

    trained = PatchFlow(blocks=4, hidden=64, steps=1000, batch=256, seed=0).fit(None, normal)
    untrained = PatchFlow(blocks=4, hidden=64, steps=0, batch=256, seed=0)
    untrained.mean, untrained.std = trained.mean, trained.std
    untrained.flow = flow_module.build_flow(4, 4, 64, 0).eval()  # zero-initialised couplings: the identity
    assert auroc(trained) > 0.95
    assert auroc(untrained) < 0.7  # the control: the standardised distance alone cannot tell them apart


def test_a_flow_run_reopens_and_its_bundle_scores_as_it_does(tmp_path, monkeypatch):
    from metricad.deploy.bundle import Bundle
    from metricad.deploy.export import export_run
    from metricad.run import open_run, write_run

    monkeypatch.setattr(flow_module, "STEPS", 60)
    rng = np.random.default_rng(3)
    normal = rng.integers(60, 160, (30, 48, 48)).astype(np.uint8)
    test = normal[:8].copy()
    test[:4, 10:18, 10:18] = 255
    detector = Detector(create_model("efficientnet-lite0", input_size=(48, 48)), score="flow",
                        device="cpu").fit(normal[8:24], normal[24:])
    scores, maps = detector.score_with_maps(test)
    assert scores[:4].min() > scores[4:].max()  # the bright squares
    run = write_run(tmp_path / "run", detector, {})
    reopened = open_run(run).detector
    np.testing.assert_allclose(reopened.score_samples(test), scores, rtol=1e-5, atol=1e-5)
    export_run(run, tmp_path / "flow.onnx")
    bundle_scores, bundle_maps = Bundle(tmp_path / "flow.onnx").score_with_maps(test)
    np.testing.assert_allclose(bundle_scores, scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bundle_maps, maps, rtol=1e-4, atol=1e-3)


def test_without_held_out_images_the_flow_refuses_to_normalise(monkeypatch):
    monkeypatch.setattr(flow_module, "STEPS", 5)
    normal = np.random.default_rng(0).integers(60, 160, (12, 32, 32)).astype(np.uint8)
    with pytest.raises(ValueError, match="--holdout"):
        Detector(create_model("efficientnet-lite0", input_size=(32, 32)), score="flow", device="cpu").fit(normal)
