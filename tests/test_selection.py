"""The few-anomaly protocol: K labelled anomalies from the anomaly class's training images choose the score and set
the threshold; they never come from the test images and never train the model."""

import json

import numpy as np
import pytest

from metricad.cli import main
from metricad.data import load_fashion_mnist, make_split
from metricad.run import open_run
from metricad.selection import CANDIDATES


def _bytes(images) -> set:
    return {image.tobytes() for image in images}


def test_validation_anomalies_come_from_the_training_images_of_the_anomaly_class(fake_fashion_dir):
    (train_x, train_y), (test_x, test_y) = load_fashion_mnist(fake_fashion_dir)
    split = make_split((train_x, train_y), (test_x, test_y), normal=7, anomaly=9, holdout=0.25, val_anomalies=6)
    anomalies = split.val_images[split.val_is_anomaly == 1]
    assert len(anomalies) == 6 and _bytes(anomalies) <= _bytes(train_x[train_y == 9])
    assert not _bytes(split.val_images) & _bytes(test_x)  # no test image, normal or anomalous
    assert not _bytes(anomalies) & _bytes(split.train_images)  # and never trained on
    normals = split.val_images[split.val_is_anomaly == 0]
    assert _bytes(normals) == _bytes(split.holdout_images) and not _bytes(normals) & _bytes(split.anchor_images)
    # Seeded: the same draw again, another seed another draw.
    again = make_split((train_x, train_y), (test_x, test_y), 7, 9, holdout=0.25, val_anomalies=6)
    other = make_split((train_x, train_y), (test_x, test_y), 7, 9, holdout=0.25, val_anomalies=6, val_seed=1)
    assert np.array_equal(again.val_images, split.val_images)
    assert _bytes(other.val_images[other.val_is_anomaly == 1]) != _bytes(anomalies)
    with pytest.raises(ValueError, match="held-out normal images"):
        make_split((train_x, train_y), (test_x, test_y), 7, 9, val_anomalies=6)
    with pytest.raises(ValueError, match="has 40 training images"):
        make_split((train_x, train_y), (test_x, test_y), 7, 9, holdout=0.25, val_anomalies=41)


def test_train_auto_chooses_from_the_fixed_list_and_records_how(tmp_path, fake_fashion_dir, capsys):
    run = tmp_path / "auto"
    data = ["--data-dir", str(fake_fashion_dir), "--epochs", "1", "--batch-size", "32", "--device", "cpu"]
    assert main(["train", "--out", str(run), *data, "--score", "auto"]) == 2
    assert "give --val-anomalies K" in capsys.readouterr().err and not run.exists()
    assert main(["train", "--out", str(run), *data, "--score", "auto", "--val-anomalies", "4", "--holdout", "0"]) == 2
    assert "a holdout above 0" in capsys.readouterr().err  # no held-out normal images to validate on: say so
    assert main(["train", "--out", str(run), *data, "--score", "auto", "--val-anomalies", "4",
                 "--holdout", "0.25"]) == 0
    config = json.loads((run / "config.json").read_text())
    selection = config["detector"]["selection"]
    assert selection["chosen"] == config["detector"]["score"] and selection["chosen"] in CANDIDATES
    assert list(selection["validation_auc"]) == list(CANDIDATES)  # every candidate measured, in the list's order
    assert (selection["n_normal"], selection["n_anomaly"]) == (10, 4)  # 25 % of the 40 normal images; K
    best = max(selection["validation_auc"].values())
    first_best = next(name for name, auc in selection["validation_auc"].items() if auc == best)
    assert selection["chosen"] == first_best  # ties go to the earlier candidate
    assert config["detector"]["threshold_set_on"]["mode"] == "f1"
    assert config["data"]["val_anomalies"] == 4
    # The run scores by the chosen experts only, and its threshold is the one chosen on the validation images.
    detector = open_run(run, device="cpu").detector
    assert detector.score == selection["chosen"] and detector.selection_ == selection


def test_compare_reports_both_protocols_from_one_command(tmp_path, fake_fashion_dir, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--out", str(out), "--data-dir", str(fake_fashion_dir), "--methods", "pca,metricad",
                 "--seeds", "0", "--epochs", "1", "--set", "holdout=0.25", "--val-anomalies", "2,5", "--draws", "2",
                 "--device", "cpu"]) == 0
    report = json.loads((out / "compare.json").read_text())
    zero = {s["method"] for s in report["summary"]}
    assert "metricad-auto" not in zero and {"pca", "metricad"} <= zero
    few = {(s["K"], s["method"]): s for s in report["few_anomalies"]}
    assert {k for k, _ in few} == {2, 5} and (2, "metricad-auto") in few and (5, "pca") in few
    assert few[(2, "metricad-auto")]["runs"] == 2 and sum(few[(2, "metricad-auto")]["chosen"].values()) == 2
    # A baseline's AUC does not depend on the draw (nothing is chosen for it): only its threshold does.
    pca_zero = next(s for s in report["summary"] if s["method"] == "pca")
    assert few[(5, "pca")]["auc_mean"] == pytest.approx(pca_zero["auc_mean"]) and few[(5, "pca")]["auc_std"] == 0
    markdown = (out / "compare.md").read_text()
    assert "NO ANOMALY SEEN" in markdown and "FEW LABELLED ANOMALIES CHOOSE: K = 2" in markdown
    assert main(["compare", "--out", str(out), "--data-dir", str(fake_fashion_dir), "--methods", "pca",
                 "--validation", "5", "--val-anomalies", "2"]) == 2
    assert "does not combine with --validation" in capsys.readouterr().err
