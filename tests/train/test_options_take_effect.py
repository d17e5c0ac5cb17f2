"""Every training option does what it says, or is refused by name before anything is written: the threshold's
``--contamination`` (folders, tiles, Fashion-MNIST), reference images (used by a recipe that trains, refused by
the folder default that trains nothing), and the options of the other data source or of a recipe that does not
train. Each effect is checked against a value computed here, not against what the run says it stored."""

import json

import numpy as np
import pytest

from metricad.cli import main
from metricad.run import open_run
from tests.conftest import write_spot_folders
from tests.data.test_folders import TRAIN, make_folders


@pytest.fixture(scope="module")
def spots(tmp_path_factory):
    return write_spot_folders(tmp_path_factory.mktemp("spots") / "data", n_normal=30)


def _train(out, *args) -> dict:
    assert main(["train", "--out", str(out), "--device", "cpu", *args]) == 0
    return json.loads((out / "config.json").read_text())


def _quantile_of_held_out(run, contamination: float) -> float:
    """The threshold --contamination promises: the 1 - contamination quantile of the held-out good images' own
    scores (at most that share above it), scored here through the opened run."""
    detector = open_run(run, device="cpu").detector
    scores = detector.score_samples(detector.holdout_images_)
    return float(np.quantile(scores, 1 - contamination, method="higher"))


def test_the_threshold_of_a_folder_run_moves_with_contamination(spots, tmp_path):
    base = ["--normal-dir", str(spots / "normal"), "--image-size", "48,64", "--holdout", "0.5"]
    low, high = tmp_path / "low", tmp_path / "high"
    low_config, high_config = _train(low, *base), _train(high, *base, "--contamination", "0.3")
    # 15 held-out images: the 0.99 quantile is their highest score, 0.7's the fifth highest
    assert low_config["detector"]["offset"] == pytest.approx(_quantile_of_held_out(low, 0.01), abs=1e-6)
    assert high_config["detector"]["offset"] == pytest.approx(_quantile_of_held_out(high, 0.3), abs=1e-6)
    assert high_config["detector"]["offset"] < low_config["detector"]["offset"]
    assert high_config["detector"]["threshold_set_on"]["contamination"] == 0.3
    held_out = open_run(high, device="cpu").detector
    flagged = held_out.predict(held_out.holdout_images_).mean()
    assert 0.2 <= flagged <= 0.3  # 4 of 15 above the threshold (ties aside), none with the default's
    # the defect masks keep their own quantile: flagging more images does not widen every mask
    assert high_config["detector"]["pixel_offset"] == pytest.approx(low_config["detector"]["pixel_offset"])


def test_the_threshold_of_a_tiled_run_moves_with_contamination(spots, tmp_path):
    base = ["--normal-dir", str(spots / "normal"), "--tile", "32", "--tile-overlap", "8", "--holdout", "0.5"]
    low, high = tmp_path / "low", tmp_path / "high"
    low_tiling, high_tiling = _train(low, *base)["tiling"], _train(high, *base, "--contamination", "0.3")["tiling"]
    run = open_run(high, device="cpu")
    whole = run.scorer.score_samples(_held_out_whole_images(run))  # each image scored as its worst tile
    expected = float(np.quantile(whole, 0.7, method="higher"))
    assert high_tiling["offset"] == pytest.approx(expected, abs=1e-6)
    assert high_tiling["offset"] < low_tiling["offset"] and high_tiling["threshold_set_on"]["contamination"] == 0.3


def _held_out_whole_images(run) -> np.ndarray:
    """The good images a run held out, whole, at their own size (the run keeps only their tiles)."""
    from metricad.data.folders import folder_split

    split, _ = folder_split(run.config["data"])
    return split.holdout_images


def test_contamination_sets_the_threshold_on_fashion_mnist_too(fake_fashion_dir, tmp_path):
    run = tmp_path / "run"
    config = _train(run, "--data-dir", str(fake_fashion_dir), "--epochs", "1", "--batch-size", "32",
                    "--ensemble", "1", "--holdout", "0.5", "--contamination", "0.25")
    # 20 held-out sneakers: the 0.75 quantile is the fifth highest score, the default's (0.99) the highest
    assert config["detector"]["offset"] == pytest.approx(_quantile_of_held_out(run, 0.25), abs=1e-6)
    assert config["detector"]["offset"] < _quantile_of_held_out(run, 0.01)


def test_reference_images_train_a_recipe_that_trains_and_are_refused_by_the_folder_default(tmp_path, capsys):
    root = make_folders(tmp_path / "data", np.random.default_rng(0), n=40)
    base = ["--normal-dir", str(root / "normal"), "--device", "cpu"]
    refused = tmp_path / "refused"
    assert main(["train", "--out", str(refused), *base, "--reference-dir", str(root / "reference")]) == 2
    err = capsys.readouterr().err
    assert f"--reference-dir {root / 'reference'}" in err and "--preset default" in err
    assert not refused.exists() and not list(tmp_path.glob(".refused*"))
    # A recipe that trains learns them as classes: two reference classes beside the normal one and its half turn
    # (the 20x24 input keeps rot180 alone), against the normal class and its half turn without them.
    trained = ["train", *base, *TRAIN[:-2], "--batch-size", "16", "--labels", "fine"]
    assert main([*trained, "--out", str(tmp_path / "with"), "--reference-dir", str(root / "reference")]) == 0
    assert main([*trained, "--out", str(tmp_path / "without")]) == 0
    centres = {name: open_run(tmp_path / name, device="cpu").detector.models[0].class_centres.shape[1]
               for name in ("with", "without")}
    assert centres == {"with": 4, "without": 2}


@pytest.mark.parametrize("args, named", [
    (["--normal-dir", "N", "--normal", "3"], "--normal: Fashion-MNIST options, not used with --normal-dir"),
    (["--normal-dir", "N", "--limit", "5", "--data-dir", "D"], "--limit, --data-dir: Fashion-MNIST options"),
    (["--image-size", "32"], "--image-size: options for image folders: pass --normal-dir"),
    (["--tile", "32"], "--tile: options for image folders"),
    (["--normal-dir", "N", "--lr", "0.1", "--defects", "scar"], "--lr, --defects: the inspection recipe trains "
                                                                "nothing"),
    (["--normal-dir", "N", "--val-dir", "V"], "--val-dir V: with held-out good images the threshold is set on them"),
    (["--normal-dir", "N", "--val-dir", "V", "--score", "auto", "--contamination", "0.2"],
     "--score auto sets the threshold at the best F1"),
    (["--threshold-mode", "f1"], "threshold mode 'f1' needs labelled validation images: on Fashion-MNIST"),
    (["--normal-dir", "N", "--contamination", "0.5"], "--contamination must be in (0, 0.5), got 0.5"),
    (["--normal-dir", "N", "--threshold-mode", "tail", "--contamination", "0.05"],
     "--contamination 0.05: threshold mode 'tail' does not use it"),
    (["--normal-dir", "N", "--target-fpr", "0.05"], "--target-fpr 0.05: threshold mode 'contamination' does not"),
    (["--normal-dir", "N", "--threshold-mode", "tail", "--holdout", "0"], "--holdout 0 keeps none"),
    (["--normal-dir", "N", "--threshold-mode", "tail", "--tile", "32"], "the tail fit is not available with --tile"),
    (["--normal-dir", "N", "--holdout", "0", "--score", "flow"], "hold out good images to normalise it on"),
])
def test_an_option_that_would_go_unused_is_refused_by_name(tmp_path, capsys, monkeypatch, args, named):
    root = make_folders(tmp_path / "data", np.random.default_rng(0), n=20)
    monkeypatch.chdir(tmp_path)
    for short, folder in (("N", "normal"), ("V", "val"), ("D", "data")):
        (tmp_path / short).symlink_to(root / folder if folder != "data" else root)
    assert main(["train", "--out", "run", "--device", "cpu", *args]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


def test_resume_takes_only_the_device_and_the_data_dir(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3"]) == 2
    assert "--epochs: --resume continues" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("args, named", [
    (["export-dataset", "--dataset", "elpv", "--out", "x", "--normal", "3"], "--normal: Fashion-MNIST options, "
                                                                             "not used with --dataset elpv"),
    (["compare", "--out", "x", "--pairs", "7:9", "--anomaly", "5"], "--anomaly: --pairs names every"),
])
def test_other_commands_refuse_options_they_would_not_use(tmp_path, capsys, monkeypatch, args, named):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert named in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_the_bank_size_bounds_the_patch_bank(spots, tmp_path, capsys):
    base = ["--normal-dir", str(spots / "normal"), "--image-size", "48,64"]
    _train(tmp_path / "small", *base, "--bank-size", "64")
    _train(tmp_path / "whole", *base)
    banks = {name: open_run(tmp_path / name, device="cpu").detector.graph_.members[0].experts["patch"].bank
             for name in ("small", "whole")}
    # 27 anchors x a 6x8 grid of stride-8 patches = 1,296, under the default 4,096: all kept; 64 of them chosen
    assert len(banks["whole"]) == 27 * 6 * 8 and len(banks["small"]) == 64
    assert main(["train", "--out", str(tmp_path / "none"), *base, "--bank-size", "0"]) == 2
    assert "--bank-size must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_the_tail_mode_sets_the_threshold_from_the_held_out_tail(spots, tmp_path):
    """--threshold-mode tail --target-fpr: the held-out good scores' fitted tail, not their quantile."""
    from metricad.thresholds import tail_threshold

    base = ["--normal-dir", str(spots / "normal"), "--image-size", "48,64", "--holdout", "0.9"]  # 27 of 30
    config = _train(tmp_path / "tail", *base, "--threshold-mode", "tail", "--target-fpr", "0.05")
    detector = open_run(tmp_path / "tail", device="cpu").detector
    held = detector.score_samples(detector.holdout_images_)
    assert config["detector"]["offset"] == pytest.approx(tail_threshold(held, 0.05), abs=1e-6)
    assert config["detector"]["threshold_set_on"] == {"mode": "tail", "n_normal": 27, "n_anomaly": 0,
                                                      "target_fpr": 0.05}
    # the control: the quantile of the same 15 scores is another threshold (the tail fit moves it)
    assert abs(config["detector"]["offset"] - _quantile_of_held_out(tmp_path / "tail", 0.05)) > 1e-3
