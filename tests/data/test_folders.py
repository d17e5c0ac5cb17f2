import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from metricad import Detector
from metricad.cli import main
from metricad.data.folders import infer_input_spec, read_images
from metricad.data.images import list_image_files
from metricad.run import open_run

# The reference-class recipe on folders (the folder default is the pretrained inspection preset: below).
TRAIN = ["--preset", "default", "--epochs", "2", "--batch-size", "32", "--device", "cpu"]


def test_exported_folders_train_exactly_like_the_built_in_split(tmp_path, fake_fashion_dir, capsys):
    folders, run, trained_run = tmp_path / "folders", tmp_path / "run", tmp_path / "built-in"
    # Without a holdout: the built-in split and the folders would each draw theirs in their own order.
    assert main(["train", "--out", str(trained_run), "--data-dir", str(fake_fashion_dir), "--holdout", "0",
                 *TRAIN]) == 0
    assert main(["export-dataset", "--out", str(folders), "--data-dir", str(fake_fashion_dir)]) == 0
    assert {p.name for p in (folders / "reference").iterdir()} == {
        "t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "bag"}
    assert {p.name for p in (folders / "test").iterdir()} == {"good", "ankle-boot"}
    assert main(["train", "--out", str(run), "--normal-dir", str(folders / "normal"), "--reference-dir",
                 str(folders / "reference"), "--holdout", "0", *TRAIN]) == 0
    built_in = load_file(str(trained_run / "weights.safetensors"))
    from_folders = load_file(str(run / "weights.safetensors"))
    assert built_in.keys() == from_folders.keys()
    for key in built_in:
        assert torch.equal(built_in[key], from_folders[key]), key
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), "--data-dir", str(fake_fashion_dir)]) == 0
    built_in_auc = json.loads((trained_run / "metrics.json").read_text())["auc"]
    assert main(["evaluate", str(run), "--test-dir", str(folders / "test")]) == 0
    assert json.loads((run / "metrics.json").read_text())["auc"] == pytest.approx(built_in_auc, abs=1e-12)


def make_folders(root, rng, n=60, size=(20, 24), mode="L", defect=None):
    """normal/: dark images; reference/{a,b}/: a bright square at two places; val/ and test/: good + blob
    anomalies (other images in each): a bright blob, or with ``defect`` a faint one, ``defect`` grey levels above
    the noise (6: raw-pixel 1-NN no longer separates them, AUC about 0.7)."""
    def save(path, array):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).convert(mode).save(path)

    def noise():
        return rng.integers(0, 40, size, dtype=np.uint8)

    for i in range(n):
        save(root / "normal" / f"n{i:03d}.png", noise())
        for name, (r, c) in (("a", (2, 2)), ("b", (10, 12))):
            img = noise()
            img[r:r + 6, c:c + 6] = 230
            save(root / "reference" / name / f"{name}{i:03d}.png", img)
    for folder in ("val", "test"):
        for i in range(20):
            save(root / folder / "good" / f"g{i}.png", noise())
            img = noise()
            img[6:14, 6:14] = 255 if defect is None else img[6:14, 6:14] + defect
            save(root / folder / "blob" / f"b{i}.png", img)
    return root


def _raw_pixel_1nn_auc(root) -> float:
    from sklearn.metrics import roc_auc_score

    def flat(folder):
        return read_images(list_image_files([folder]), (20, 24), 1)[0].reshape(-1, 480).astype(float)

    normal, good, blob = flat(root / "normal"), flat(root / "test" / "good"), flat(root / "test" / "blob")
    queries = np.concatenate([good, blob])
    nearest = np.sqrt(((queries[:, None] - normal[None]) ** 2).sum(-1)).min(1)
    return roc_auc_score(np.r_[np.zeros(len(good)), np.ones(len(blob))], nearest)


def test_folder_run_end_to_end_with_thresholds(tmp_path):
    # Faint defects (6 grey levels on noise of 40): raw pixels do not separate them, a trained model must.
    root = make_folders(tmp_path / "data", np.random.default_rng(0), defect=6)
    assert infer_input_spec(list_image_files([root / "normal"])) == (1, (20, 24))
    base = ["train", "--normal-dir", str(root / "normal"), "--reference-dir", str(root / "reference"), *TRAIN,
            "--batch-size", "16"]
    run = tmp_path / "run"
    assert main([*base, "--out", str(run), "--contamination", "0.1"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["holdout"] == 0.1 and config["detector"]["threshold_set_on"]["mode"] == "contamination"
    assert config["detector"]["threshold_set_on"]["n_normal"] == 6  # 10 % of the 60 normal images, kept out of anchors
    assert len(open_run(run).detector.anchor_indices_) == 54
    for mode in ("f1", "fpr"):
        out = tmp_path / f"run-{mode}"
        assert main([*base, "--out", str(out), "--val-dir", str(root / "val"), "--threshold-mode", mode]) == 0
        # The threshold was set on the validation images: they cannot also measure it.
        assert main(["evaluate", str(out), "--test-dir", str(root / "val")]) == 2
        assert main(["evaluate", str(out)]) == 2  # and the run has no test images of its own
        assert main(["evaluate", str(out), "--test-dir", str(root / "test")]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["test_images"] == str(root / "test") and metrics["threshold_set_on"]["mode"] == mode
        assert metrics["threshold_set_on"]["n_anomaly"] == 20  # the validation set's blobs
        # Measured (2026-12-01): 0.807 after these 2 epochs, 0.767 with the same model untrained (--lr 1e-9),
        # raw-pixel 1-NN 0.710: a model that does not learn fails here. Deterministic on a CPU for a given thread
        # count (README, "Repeatable results"); one of the 400 pairs is 0.0025 of AUC.
        assert metrics["auc"] > 0.785 and _raw_pixel_1nn_auc(root) < 0.75
        detector = open_run(out).detector  # on the images it was set on, the threshold does what it promises
        val = read_images(list_image_files([root / "val" / "good"]), (20, 24), 1)[0]
        if mode == "fpr":
            assert detector.predict(val).mean() <= 0.01


def test_threshold_modes_on_known_scores(tmp_path):
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, (200, 8)).astype(np.float32)

    class Identity(torch.nn.Module):  # images are their own embeddings: scores are z-scored plain distances
        in_channels, input_size, embedding_dim = 1, (1, 8), 8

        def forward_views(self, x):
            return {"embedding": x.flatten(1)}

    detector = Detector(Identity(), score="knn", device="cpu").fit((normal[:100, None, None] + 5) / 10)
    held_out = (normal[100:, None, None] + 5) / 10
    far = (np.clip(normal[:20, None, None] + 3.5, -5, 5) + 5) / 10
    detector.calibrate(held_out, mode="contamination", contamination=0.05)
    assert np.mean(detector.predict(held_out)) <= 0.05 and detector.threshold_set_on_["n_normal"] == 100
    images, labels = np.concatenate([held_out, far]), np.r_[np.zeros(100), np.ones(20)]
    detector.calibrate(images, labels, mode="fpr", target_fpr=0.02)
    assert np.mean(detector.predict(held_out)) <= 0.02
    detector.calibrate(images, labels, mode="f1")
    predicted = detector.predict(images)
    f1 = 2 * np.sum(predicted * labels) / (np.sum(predicted) + np.sum(labels))
    scores = detector.score_samples(images)
    for t in np.unique(scores):  # no threshold does better on the calibration images
        p = scores > t
        assert 2 * np.sum(p * labels) / (np.sum(p) + np.sum(labels)) <= f1 + 1e-12


def test_bad_files_are_named_or_skipped(tmp_path, capsys):
    root = make_folders(tmp_path / "data", np.random.default_rng(1), n=40)
    (root / "normal" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    args = ["train", "--out", str(tmp_path / "run"), "--normal-dir", str(root / "normal"), "--reference-dir",
            str(root / "reference"), *TRAIN, "--batch-size", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "zz-broken.png: not a readable image" in err and "--skip-bad-files" in err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))
    assert main([*args, "--skip-bad-files"]) == 0
    skipped = json.loads((tmp_path / "run" / "skipped_files.json").read_text())
    assert len(skipped) == 1 and skipped[0][0].endswith("zz-broken.png")


def test_rgb_images_and_explicit_input_spec(tmp_path):
    root = make_folders(tmp_path / "data", np.random.default_rng(2), n=40, size=(100, 80), mode="RGB")
    assert infer_input_spec(list_image_files([root / "normal"])) == (3, (64, 51))  # longer side scaled to 64
    images, kept, skipped = read_images(list_image_files([root / "normal"])[:3], (32, 32), 3)
    assert images.shape == (3, 3, 32, 32) and len(kept) == 3 and not skipped
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--normal-dir", str(root / "normal"), "--reference-dir",
                 str(root / "reference"), "--image-size", "32", "--channels", "1", *TRAIN, "--batch-size", "16"]) == 0
    assert open_run(run).detector.input_spec == (1, (32, 32))


@pytest.mark.parametrize("layout, message", [("missing", "no such directory"), ("empty", "no image files"),
                                             ("no-good", "needs a good/ sub-folder")])
def test_folder_layout_errors_name_the_folder(tmp_path, trained_run, layout, message, capsys):
    test_dir = tmp_path / "test"
    if layout != "missing":
        test_dir.mkdir()
    if layout == "no-good":
        (test_dir / "bad").mkdir()
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(test_dir / "bad" / "x.png")
    assert main(["evaluate", str(trained_run), "--test-dir", str(test_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(test_dir) in err


def test_non_square_inputs_keep_only_the_default_negatives_that_fit(tmp_path, capsys):
    root = make_folders(tmp_path / "data", np.random.default_rng(3), n=40)  # 20x24 images
    base = ["train", "--normal-dir", str(root / "normal"), "--reference-dir", str(root / "reference"), *TRAIN,
            "--batch-size", "16"]
    assert main([*base, "--out", str(tmp_path / "run")]) == 0
    assert "20x24 is not square: shifted negatives ['rot180'] only" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["negatives"] == ["rot180"]
    # Asked for by name, a quarter turn of a non-square input is refused before anything is written.
    assert main([*base, "--out", str(tmp_path / "asked"), "--negatives", "rot90,vflip"]) == 2
    assert "--negatives rot90 need a square model input, this one is 20x24" in capsys.readouterr().err
    assert not (tmp_path / "asked").exists() and not list(tmp_path.glob(".asked*"))
