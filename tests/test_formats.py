"""Old runs and bundles open, with the same decision; unknown versions are refused with the version named."""

import json
import shutil

import numpy as np
import onnx
import pytest

from metricad.deploy.bundle import BUNDLE_FORMAT, Bundle
from metricad.deploy.export import export_run
from metricad.layout import Layout
from metricad.run import RUN_FORMAT, open_run


def _as_format_2(run, tmp_path):
    old = tmp_path / "format-2"
    shutil.copytree(run, old)
    config = json.loads(Layout(old).config.read_text())
    assert config["format"] == RUN_FORMAT == 3
    config["format"] = 2
    config["detector"]["threshold"] = config["detector"].pop("threshold_set_on")
    Layout(old).config.write_text(json.dumps(config))
    return old


def test_a_format_2_run_opens_with_its_threshold_record(trained_run, tmp_path):
    new, old = open_run(trained_run).detector, open_run(_as_format_2(trained_run, tmp_path)).detector
    assert old.offset_ == new.offset_ and old.threshold_set_on_ == new.threshold_set_on_
    assert new.threshold_set_on_["mode"] in ("contamination", "leave-one-out")


@pytest.mark.parametrize("version", [1, 4])
def test_another_run_format_is_refused_naming_it(trained_run, tmp_path, version):
    run = tmp_path / "other"
    shutil.copytree(trained_run, run)
    config = json.loads(Layout(run).config.read_text())
    Layout(run).config.write_text(json.dumps(config | {"format": version}))
    with pytest.raises(ValueError, match=rf"config.json: run format {version}, this metricad reads formats 2, 3"):
        open_run(run)


def _rewrite_metadata(src, dst, change):
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for key, value in change(props).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    return dst


def test_a_bundle_1_file_scores_as_the_bundle_2_file(trained_run, tmp_path):
    new = tmp_path / "new.onnx"
    export_run(trained_run, new)

    def as_bundle_1(props):
        props["metricad.format"] = "metricad-bundle-1"
        props["metricad.threshold"] = props.pop("metricad.offset")
        return props

    old = _rewrite_metadata(new, tmp_path / "old.onnx", as_bundle_1)
    images = np.random.default_rng(0).integers(0, 255, (6, 28, 28), dtype=np.uint8)
    a, b = Bundle(new), Bundle(old)
    assert a.metadata["format"] == BUNDLE_FORMAT and b.metadata["format"] == "metricad-bundle-1"
    assert a.offset_ == b.offset_ == pytest.approx(open_run(trained_run).detector.offset_)
    np.testing.assert_array_equal(a.score_samples(images), b.score_samples(images))
    np.testing.assert_array_equal(a.predict(images), b.predict(images))


def test_an_unknown_bundle_format_is_refused_naming_it(trained_run, tmp_path):
    new = tmp_path / "new.onnx"
    export_run(trained_run, new)
    future = _rewrite_metadata(new, tmp_path / "future.onnx", lambda p: p | {"metricad.format": "metricad-bundle-9"})
    with pytest.raises(ValueError, match=r"future.onnx: bundle format 'metricad-bundle-9', this metricad reads "
                                         r"'metricad-bundle-1' and 'metricad-bundle-2'"):
        Bundle(future)
