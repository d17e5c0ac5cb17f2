"""A change to a run or bundle is a new version: written atomically, the old one kept and reopened as it was, who
and what recorded; a threshold that is not a finite number, or a name that is not printable, is refused."""

import json

import numpy as np
import pytest

from metricad.cli import main
from metricad.data import load_images
from metricad.deploy.bundle import Bundle
from metricad.deploy.versions import apply_threshold, history, versions_dir
from metricad.layout import Layout
from metricad.run import open_run


def test_a_threshold_applied_to_a_run_is_a_new_version_and_the_old_one_is_kept(writable_patch_run):
    run, _ = writable_patch_run
    before = open_run(run, device="cpu")
    version = apply_threshold(run, before.detector.offset_ + 1.5, "inspector")
    after = open_run(run, device="cpu")
    assert version == after.version == 2 and before.version == 1
    assert after.detector.offset_ == pytest.approx(before.detector.offset_ + 1.5)
    assert after.detector.threshold_set_on_["mode"] == "manual"
    assert after.detector.threshold_set_on_["by"] == "inspector"
    assert after.model_id == before.model_id  # the scores did not change, only the decision
    kept = json.loads((Layout(run).versions / "config-v1.json").read_text())
    assert kept["detector"]["offset"] == before.detector.offset_ and "version" not in kept
    [entry] = history(run)
    assert entry["by"] == "inspector" and entry["version"] == 2
    assert entry["change"] == {"threshold": pytest.approx(before.detector.offset_ + 1.5),
                               "was": pytest.approx(before.detector.offset_)}


def test_a_threshold_applied_to_a_bundle_keeps_the_old_file(writable_patch_run, tmp_path):
    run, data = writable_patch_run
    bundle = tmp_path / "part.onnx"
    assert main(["export", str(run), "--out", str(bundle)]) == 0
    old = Bundle(bundle)
    assert apply_threshold(bundle, 123.0, "inspector") == 2
    new = Bundle(bundle)
    assert (new.offset_, new.version, old.version) == (123.0, 2, 1)
    assert new.metadata["threshold_set_on"]["mode"] == "manual"
    kept = Bundle(versions_dir(bundle) / "v1.onnx")
    assert kept.offset_ == old.offset_ and kept.version == 1
    _, images = load_images(sorted((data / "test" / "spot").glob("*.png")), (48, 64), 1)
    np.testing.assert_allclose(new.score_samples(images), old.score_samples(images), rtol=1e-6)
    assert new.predict_scores(new.score_samples(images)).sum() == 0  # every spot now passes at 123
    assert old.predict_scores(old.score_samples(images)).sum() == len(images)


def test_a_runs_own_bundle_follows_its_threshold(writable_patch_run):
    run, _ = writable_patch_run
    assert main(["export", str(run)]) == 0
    apply_threshold(run, 9.25, "inspector")
    assert Bundle(Layout(run).bundle).offset_ == 9.25
    assert Bundle(Layout(run).bundle).metadata["run_version"] == 2


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "5", True])
def test_a_threshold_that_is_not_a_finite_number_is_refused_and_nothing_is_written(writable_patch_run, value):
    run, _ = writable_patch_run
    config = Layout(run).config.read_text()
    with pytest.raises(ValueError, match="finite number"):
        apply_threshold(run, value, "inspector")
    assert Layout(run).config.read_text() == config and not history(run)


def test_who_must_be_a_short_printable_name(writable_patch_run):
    run, _ = writable_patch_run
    with pytest.raises(ValueError, match="printable name"):
        apply_threshold(run, 1.0, "a\nb")
    with pytest.raises(ValueError, match="at most 100"):
        apply_threshold(run, 1.0, "x" * 101)
