"""``metricad update RUN --add-good DIR``: a run learns good images without training. A look the run flags (the
control) passes after one of its images is learned, held-out images of that look pass too, and real defects stay
flagged; the result is a new version (the old detector file kept), the run's bundle is exported again and scores as
the run does; a score that cannot learn this way, a bundle, a bad image and a muddled request are refused by name,
with nothing written."""

import json

import numpy as np
import pytest
import torch

from metricad.cli import main
from metricad.data import load_images
from metricad.deploy.bundle import Bundle
from metricad.deploy.versions import history, versions_dir
from metricad.layout import Layout
from metricad.run import open_run
from tests.conftest import write_new_look


def _flags(run, paths):
    detector = open_run(run, device="cpu").detector
    _, images = load_images(paths, detector.input_spec[1], 1)
    return detector.predict(images), detector


def test_update_learns_a_new_look_and_keeps_the_defects_flagged(writable_patch_run, tmp_path, capsys):
    run, data = writable_patch_run
    looks = write_new_look(tmp_path / "looks")
    spots = sorted((data / "test" / "spot").glob("*.png"))
    before, _ = _flags(run, looks + spots)
    assert before.tolist() == [1] * 8  # the control: the new look is a false alarm before the update
    assert main(["update", str(run), "--add-good", str(looks[0]), "--by", "inspector"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["version"], summary["images_added"], summary["previous_version"]) == (2, 1, 1)
    assert summary["model_id"] != summary["previous_model_id"]
    after, detector = _flags(run, looks + spots)
    assert after.tolist() == [0, 0, 0] + [1] * 5  # look1, look2 were never learned: the look generalises
    assert detector.threshold_set_on_["images"] == "held-out normal images"
    assert Layout(run).detector.is_file() and (run / "detector-v2.safetensors").is_file()
    assert history(run)[0]["change"]["files"] == ["look0.png"] and history(run)[0]["by"] == "inspector"


def test_the_runs_bundle_is_exported_again_and_scores_as_the_run(writable_patch_run, tmp_path):
    run, data = writable_patch_run
    assert main(["export", str(run)]) == 0
    looks = write_new_look(tmp_path / "looks")
    threads = torch.get_num_threads()
    try:
        assert main(["update", str(run), "--add-good", str(tmp_path / "looks"), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1  # --threads: the fit ran on one thread
    finally:
        torch.set_num_threads(threads)
    bundle, detector = Bundle(Layout(run).bundle), open_run(run, device="cpu").detector
    _, images = load_images(looks + sorted((data / "test" / "spot").glob("*.png")), (48, 64), 1)
    np.testing.assert_allclose(bundle.score_samples(images), detector.score_samples(images), rtol=1e-4, atol=1e-4)
    assert bundle.offset_ == pytest.approx(detector.offset_) and bundle.version == 2
    assert Bundle(versions_dir(Layout(run).bundle) / "v1.onnx").predict_scores(
        Bundle(versions_dir(Layout(run).bundle) / "v1.onnx").score_samples(images[:3])).tolist() == [1, 1, 1]


def _scores(run, paths):
    detector = open_run(run, device="cpu").detector
    return detector.score_samples(load_images(paths, detector.input_spec[1], 1)[1])


def test_a_learned_density_is_fitted_again(tmp_path):
    """The flow expert learns on the normal images: update fits it again with the new look among them. (Its
    threshold, on three held-out images here, is too noisy to test a decision on: the scores are tested.)"""
    from tests.conftest import write_spot_folders

    data = write_spot_folders(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--normal-dir", str(data / "normal"), "--image-size", "48,64",
                 "--score", "flow", "--device", "cpu"]) == 0
    looks, spots = write_new_look(tmp_path / "looks", n=6), sorted((data / "test" / "spot").glob("*.png"))
    before = _scores(run, looks + spots)
    assert main(["update", str(run), "--add-good", *map(str, looks[:4])]) == 0
    after = _scores(run, looks + spots)
    assert np.all(after[:6] < 0.05 * before[:6])  # learned, and the two never seen: the density took the look
    assert after[:6].max() < 0.1 * after[6:].min()  # the spots stay far out of it
    assert np.all(open_run(run, device="cpu").detector.predict_scores(after[6:]) == 1)


def test_a_score_trained_from_scratch_says_so_and_points_to_retraining(trained_run, tmp_path, capsys):
    config = Layout(trained_run).config.read_text()
    write_new_look(tmp_path / "looks", n=1, size=(28, 28))
    assert main(["update", str(trained_run), "--add-good", str(tmp_path / "looks")]) == 2
    assert "class centres learned in training" in capsys.readouterr().err
    assert Layout(trained_run).config.read_text() == config


def test_refusals_write_nothing(writable_patch_run, tmp_path, capsys):
    run, _ = writable_patch_run
    config = Layout(run).config.read_text()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    cases = [([], "nothing to update"), (["--add-good", str(tmp_path / "bad"), "--threshold", "2"], "one per update"),
             (["--add-good", str(tmp_path / "bad")], "broken.png: not a readable image"),
             (["--add-good", str(tmp_path / "missing")], "missing: no such folder")]
    for extra, message in cases:
        assert main(["update", str(run), *extra]) == 2
        assert message in capsys.readouterr().err
    assert Layout(run).config.read_text() == config and not list(run.glob("detector-v*"))
    assert main(["export", str(run), "--out", str(tmp_path / "part.onnx")]) == 0
    assert main(["update", str(tmp_path / "part.onnx"), "--add-good", str(tmp_path / "bad")]) == 2
    assert "a model bundle holds no images" in capsys.readouterr().err
