"""``metricad make-defects``: half the good images kept, the other half each with one pasted defect whose mask
marks the pasted shape where it changed the image visibly, in MVTec AD's layout; nothing half-written, an
existing folder refused."""

import numpy as np
import pytest
from PIL import Image

from metricad.cli import main
from metricad.data.defect_folders import write_defect_test_set
from metricad.data.defects import box_blur


def _goods(folder, n=8, size=(30, 40)):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(60, 200, size).astype(np.uint8)).save(folder / f"c{i}.png")
    return folder


def test_the_check_set_is_in_mvtec_layout_with_exact_masks(tmp_path):
    good = _goods(tmp_path / "good")
    counts = write_defect_test_set(good, tmp_path / "check", ["cutpaste", "scar"], seed=3)
    assert counts == {"good": 4, "cutpaste": 2, "scar": 2}
    for kind in ("cutpaste", "scar"):
        for path in sorted((tmp_path / "check" / "test" / kind).glob("*.png")):
            changed = np.asarray(Image.open(path)).astype(int)
            original = np.asarray(Image.open(good / path.name)).astype(int)
            mask = np.asarray(Image.open(tmp_path / "check" / "masks" / kind / f"{path.stem}_mask.png")) > 0
            assert mask.shape == original.shape and mask.any()
            difference = np.abs(changed - original).astype(np.float32)
            local = box_blur(difference[None], 2)[0]  # the 5x5 mean change around each pixel
            assert (local[mask] >= 8).all() and not (local[~mask & (difference > 0)] >= 8).any()
    kept = sorted(p.name for p in (tmp_path / "check" / "test" / "good").glob("*.png"))
    assert len(kept) == 4 and all((np.asarray(Image.open(tmp_path / "check" / "test" / "good" / name))
                                   == np.asarray(Image.open(good / name))).all() for name in kept)


def test_a_defect_on_black_marks_only_what_it_changed(tmp_path):
    """Darkening or lightening a black background changes nothing there: those pixels are not in the mask."""
    folder = tmp_path / "good"
    folder.mkdir()
    for i in range(4):
        image = np.zeros((28, 28), np.uint8)
        image[8:20, 4:24] = 180  # a bright part on a black background, as a Fashion-MNIST shoe
        Image.fromarray(image).save(folder / f"s{i}.png")
    write_defect_test_set(folder, tmp_path / "check", ["intensity"], seed=0)
    for path in (tmp_path / "check" / "masks" / "intensity").glob("*.png"):
        mask = np.asarray(Image.open(path)) > 0
        # on the bright part and the blur's halo around it (radius at most 3), never out on the black
        assert mask.any() and not mask[:5].any() and not mask[23:].any()


def test_an_existing_folder_is_refused_and_nothing_half_written_stays(tmp_path, capsys):
    good = _goods(tmp_path / "good")
    (tmp_path / "taken").mkdir()
    assert main(["make-defects", str(good), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(good / "nested.png")
    (good / "sub").mkdir()
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(good / "sub" / "c1.png")
    with pytest.raises(ValueError, match="two images are named 'c1'"):
        write_defect_test_set(good, tmp_path / "check")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "taken"]


def test_a_thin_crack_keeps_its_line_in_the_mask(tmp_path):
    """A 1 px crack changes its own pixels visibly but its 5x5 neighbourhood by a fifth of that: the mask keeps
    the line (every pixel it changed by 8 grey levels or more) rather than dropping it as invisible."""
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):  # a smooth surface: what a crack shows on
        Image.fromarray(np.clip(rng.normal(140, 3, (64, 80)), 0, 255).astype(np.uint8)).save(good / f"c{i}.png")
    write_defect_test_set(good, tmp_path / "check", ["crack"], seed=0)
    faint = 0  # line pixels whose 5x5 mean changed by less than 8: what the neighbourhood rule alone would drop
    for path in sorted((tmp_path / "check" / "test" / "crack").glob("*.png")):
        difference = np.abs(np.asarray(Image.open(path)).astype(int) - np.asarray(Image.open(good / path.name)))
        mask = np.asarray(Image.open(tmp_path / "check" / "masks" / "crack" / f"{path.stem}_mask.png")) > 0
        line = difference >= 8
        assert line.sum() >= 10 and mask[line].all() and not mask[difference == 0].any()
        faint += int((box_blur(difference[None].astype(np.float32), 2)[0][line] < 8).sum())
    assert faint > 0
