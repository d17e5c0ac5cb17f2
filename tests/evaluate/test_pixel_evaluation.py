"""``metricad evaluate --mask-dir``: pixel AUROC, AUPRO and per-type AUROC as top-level keys of metrics.json,
computed on the maps at each file's resolution (equal to ``pixel_metrics`` on them); a missing or mis-sized mask
is an error naming the file; the report shows maps beside masks and the missed defects."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from metricad.cli import main
from metricad.data import load_images
from metricad.run import open_run


@pytest.fixture()
def run_copy(patch_run, tmp_path):
    run, data = patch_run
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", data


def test_evaluate_writes_the_pixel_metrics(run_copy, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    run, data = run_copy
    assert main(["evaluate", str(run), "--test-dir", str(data / "test"), "--mask-dir", str(data / "masks")]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert f"pixel AUC {metrics['pixel_auroc']:.4f}" in out and "AUC by type: spot" in out
    # The pixel AUROC by its definition, from the run's maps brought to each file's 80x60 by Pillow here and every
    # pixel of the true masks read here, with scikit-learn's ROC AUC.
    detector = open_run(run, device="cpu").detector
    files = sorted(str(p) for p in (data / "test").rglob("*.png"))
    _, images = load_images(files, *reversed(detector.input_spec))
    _, maps = detector.score_with_maps(images)
    full = [np.asarray(Image.fromarray(m, mode="F").resize((80, 60), Image.BILINEAR)) for m in maps]
    masks = [np.zeros((60, 80), bool) if "/good/" in f else
             np.asarray(Image.open(f.replace("/test/", "/masks/").replace(".png", "_mask.png"))) > 0 for f in files]
    expected = roc_auc_score(np.concatenate(masks).ravel(), np.concatenate(full).ravel())
    assert metrics["pixel_auroc"] == pytest.approx(expected, abs=1e-6)
    assert metrics["n_defect_regions"] == 5 and set(metrics["auc_by_type"]) == {"spot"}
    # the spots found where they are, far above chance (0.5), though a 48x64 input has only a 6x8 patch grid
    assert metrics["pixel_auroc"] > 0.8 and metrics["aupro"] > 0.5
    # A control that must fail: the same masks moved half the image away give a map that looks elsewhere.
    moved = tmp_path / "moved"
    for mask_file in (data / "masks" / "spot").iterdir():
        (moved / "spot").mkdir(parents=True, exist_ok=True)
        mask = np.roll(np.asarray(Image.open(mask_file)), (30, 40), axis=(0, 1))
        Image.fromarray(mask).save(moved / "spot" / mask_file.name)
    assert main(["evaluate", str(run), "--test-dir", str(data / "test"), "--mask-dir", str(moved)]) == 0
    control = json.loads((run / "metrics.json").read_text())
    assert control["pixel_auroc"] < 0.6 and control["aupro"] < metrics["aupro"] - 0.3, (control, metrics)


def test_a_missing_or_mis_sized_mask_is_named(run_copy, tmp_path, capsys):
    run, data = run_copy
    before = (run / "metrics.json").read_text() if (run / "metrics.json").exists() else None
    masks = tmp_path / "masks"
    shutil.copytree(data / "masks", masks)
    (masks / "spot" / "002_mask.png").unlink()
    assert main(["evaluate", str(run), "--test-dir", str(data / "test"), "--mask-dir", str(masks)]) == 2
    err = capsys.readouterr().err
    assert f"{masks / 'spot' / '002.png'} or 002_mask.png" in err
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(masks / "spot" / "002.png")  # MVTec's other name, wrong size
    assert main(["evaluate", str(run), "--test-dir", str(data / "test"), "--mask-dir", str(masks)]) == 2
    assert f"{masks / 'spot' / '002.png'}: mask is 40x30 pixels" in capsys.readouterr().err
    after = (run / "metrics.json").read_text() if (run / "metrics.json").exists() else None
    assert after == before  # nothing written for a failed evaluation


def test_the_report_shows_maps_beside_masks(run_copy, tmp_path):
    run, data = run_copy
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--test-dir", str(data / "test"), "--mask-dir", str(data / "masks"),
                 "--out", str(out)]) == 0
    page = out.read_text()
    for text in ("Where the defect is", "pixel ROC AUC", "AUPRO", "PRO curve", "true mask, predicted mask",
                 "The missed defects", "<td>spot</td>"):
        assert text in page


def test_each_defect_type_is_measured_apart(run_copy, tmp_path):
    """Per type, against the good images alone: the spots, found, beside a type the maps cannot find (good images
    filed as 'unseen' with a mask over an unchanged patch); the spots' pixel AUROC by scikit-learn here."""
    import shutil

    from sklearn.metrics import roc_auc_score

    run, data = run_copy
    test, masks = tmp_path / "test", tmp_path / "masks"
    shutil.copytree(data / "test", test)
    shutil.copytree(data / "masks", masks)
    (test / "unseen").mkdir()
    (masks / "unseen").mkdir()
    for i, good in enumerate(sorted((data / "test" / "good").glob("*.png"))[:3]):
        shutil.copy(good, test / "unseen" / f"u{i}.png")
        mask = np.zeros((60, 80), np.uint8)
        mask[20:30, 30:42] = 255
        Image.fromarray(mask).save(masks / "unseen" / f"u{i}_mask.png")
    assert main(["evaluate", str(run), "--test-dir", str(test), "--mask-dir", str(masks)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["pixel_auroc_by_type"]) == set(metrics["aupro_by_type"]) == {"spot", "unseen"}
    assert metrics["pixel_auroc_by_type"]["spot"] > 0.8 > 0.65 > metrics["pixel_auroc_by_type"]["unseen"]
    assert metrics["aupro_by_type"]["spot"] > metrics["aupro_by_type"]["unseen"] + 0.3
    detector = open_run(run, device="cpu").detector
    files = sorted(str(p) for kind in ("good", "spot") for p in (test / kind).glob("*.png"))
    _, images = load_images(files, *reversed(detector.input_spec))
    full = [np.asarray(Image.fromarray(m, mode="F").resize((80, 60), Image.BILINEAR))
            for m in detector.score_with_maps(images)[1]]
    truth = [np.zeros((60, 80), bool) if "/good/" in f else
             np.asarray(Image.open(f.replace(str(test), str(masks)).replace(".png", "_mask.png"))) > 0 for f in files]
    expected = roc_auc_score(np.concatenate(truth).ravel(), np.concatenate(full).ravel())
    assert metrics["pixel_auroc_by_type"]["spot"] == pytest.approx(expected, abs=1e-6)
