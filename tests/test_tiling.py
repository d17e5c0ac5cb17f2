"""Tiling: tiles cover the image and end on its edges, stitching averages overlaps back to the full image, and a
tiled image scores as its worst tile with its threshold set on whole held-out images; a folder run trained
with --tile scores a large image (run and bundle alike) and finds a defect where it is."""

import numpy as np
import pytest
from PIL import Image

from metricad.tiling import TiledScorer, Tiling, calibrate_tiled


def test_tiles_cover_the_image_and_end_on_its_edges():
    tiling = Tiling(32, 8)
    assert tiling.starts(100) == [0, 24, 48, 68]  # stride 24, the last tile moved onto the edge
    assert tiling.starts(32) == [0]
    image = np.arange(70 * 100, dtype=np.float32).reshape(70, 100)
    tiles = tiling.split(image)
    assert tiles.shape == (3 * 4, 32, 32)
    np.testing.assert_array_equal(tiles[-1], image[38:70, 68:100])
    np.testing.assert_array_equal(tiling.stitch(tiles, 70, 100), image)  # equal tiles stitch back exactly
    with pytest.raises(ValueError, match="smaller than the tile"):
        tiling.starts(20)
    with pytest.raises(ValueError, match="--tile-overlap"):
        Tiling(32, 32)


def test_stitching_averages_where_tiles_overlap():
    tiling = Tiling(4, 2)
    maps = np.stack([np.full((4, 4), value, np.float32) for value in (0.0, 2.0)])  # two tiles along a 4x6 image
    stitched = tiling.stitch(maps, 4, 6)
    np.testing.assert_array_equal(stitched[0], [0, 0, 1, 1, 2, 2])


class SpotScorer:
    """Scores a tile by its brightest pixel; its map is the tile itself."""

    input_spec, offset_, pixel_offset_, has_map, model_id = (1, (8, 8)), 0.5, 0.5, True, "fake"

    def score_samples(self, tiles):
        return tiles.reshape(len(tiles), -1).max(1)

    def score_with_maps(self, tiles):
        return self.score_samples(tiles), tiles.astype(np.float32)


def test_a_tiled_image_scores_as_its_worst_tile_with_a_whole_image_threshold():
    images = np.zeros((3, 16, 24), np.float32)
    images[1, 12, 20] = 0.9
    scorer = TiledScorer(SpotScorer(), Tiling(8, 0), (16, 24))
    np.testing.assert_allclose(scorer.score_samples(images), [0.0, 0.9, 0.0])
    scores, maps = scorer.score_with_maps(images)
    assert maps.shape == (3, 16, 24) and maps[1, 12, 20] == pytest.approx(0.9)
    masks = scorer.predict_masks(scores, maps)
    assert masks[1].sum() == 1 and masks[1, 12, 20] and not masks[0].any()
    normal = np.zeros((5, 16, 24), np.float32)
    normal[:, 0, 0] = np.linspace(0.1, 0.3, 5)  # the worst tile of each held-out image, not a typical tile
    calibrate_tiled(scorer, normal, contamination=0.01)
    assert scorer.offset_ == pytest.approx(0.3) and scorer.threshold_set_on_["images"].endswith("tiled")
    assert scorer.model_id == "fake"  # the rest is the tile scorer's


def _line_scan_folders(root, rng, n=12, size=(96, 288)):
    """Good wide 'line-scan' textures, and test images with one 10x10 spot."""
    for folder in ("normal", "test/good", "test/spot"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.clip(rng.normal(128, 10, size), 0, 255).astype(np.uint8)).save(root / "normal" / f"{i}.png")
    for i in range(2):
        good = np.clip(rng.normal(128, 10, size), 0, 255).astype(np.uint8)
        Image.fromarray(good).save(root / "test" / "good" / f"{i}.png")
        good[40:50, 200 + 20 * i:210 + 20 * i] = 255
        Image.fromarray(good).save(root / "test" / "spot" / f"{i}.png")
    return root


def test_a_tiled_folder_run_scores_large_images_run_and_bundle_alike(tmp_path, capsys):
    from metricad.cli import main
    from metricad.data import load_images
    from metricad.deploy.scorer import load_scorer
    from metricad.run import open_run

    data = _line_scan_folders(tmp_path / "data", np.random.default_rng(0))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--normal-dir", str(data / "normal"), "--tile", "64",
                 "--tile-overlap", "16", "--holdout", "0.25", "--device", "cpu"]) == 0
    opened = open_run(run)
    assert opened.detector.input_spec == (1, (64, 64)) and opened.scorer.input_spec == (1, (96, 288))
    assert opened.config["tiling"]["threshold_set_on"]["images"] == "held-out normal images, tiled"
    files = sorted(str(p) for p in (data / "test").rglob("*.png"))
    _, images = load_images(files, (96, 288), 1)
    scores, maps = opened.scorer.score_with_maps(images)
    assert maps.shape == (4, 96, 288)
    spot = [i for i, f in enumerate(files) if "/spot/" in f]
    assert scores[spot].min() > scores[[i for i in range(4) if i not in spot]].max()
    for i, column in zip(spot, (205, 225)):
        row, col = np.unravel_index(maps[i].argmax(), maps[i].shape)
        assert abs(row - 45) <= 16 and abs(col - column) <= 16  # within two cells of a tile's stride-8 grid
    assert main(["export", str(run), "--out", str(tmp_path / "tiled.onnx")]) == 0
    bundle = load_scorer(tmp_path / "tiled.onnx")
    bundle_scores, bundle_maps = bundle.score_with_maps(images)
    np.testing.assert_allclose(bundle_scores, scores, atol=1e-4 * np.ptp(scores))
    assert np.abs(bundle_maps - maps).max() <= 1e-4 * np.ptp(maps)
    assert bundle.offset_ == pytest.approx(opened.scorer.offset_)
    # evaluated and reported whole: the tiled scorer stands in for the detector everywhere
    assert main(["evaluate", str(run), "--test-dir", str(data / "test")]) == 0
    assert main(["report", str(run), "--test-dir", str(data / "test"), "--out", str(tmp_path / "r.html")]) == 0
    assert "Confusion matrix" in (tmp_path / "r.html").read_text()
    # a threshold set by hand is the whole images' (the tiling's), in the run and in a bundle
    top = float(scores.max()) + 1
    assert main(["update", str(run), "--threshold", str(top)]) == 0
    assert main(["update", str(tmp_path / "tiled.onnx"), "--threshold", str(top)]) == 0
    for scorer in (open_run(run).scorer, load_scorer(tmp_path / "tiled.onnx")):
        assert scorer.offset_ == pytest.approx(top) and scorer.predict_scores(scores).sum() == 0
    assert open_run(run).detector.offset_ == opened.detector.offset_  # the tiles' own threshold unchanged
    capsys.readouterr()
    assert main(["update", str(run), "--add-good", str(data / "test" / "good")]) == 2
    assert "a tiled run (--tile)" in capsys.readouterr().err  # refused by name: train again


def test_tiling_options_are_checked_before_training(tmp_path, capsys):
    from metricad.cli import main

    data = _line_scan_folders(tmp_path / "data", np.random.default_rng(1), n=4)
    for extra, message in ((["--tile", "64", "--holdout", "0"], "fewer than two"),
                           (["--tile", "128"], "smaller than one tile"),
                           (["--tile", "64", "--tile-overlap", "64"], "--tile-overlap must be in [0, 64)")):
        assert main(["train", "--out", str(tmp_path / "run"), "--normal-dir", str(data / "normal"),
                     "--holdout", "0.5", *extra, "--device", "cpu"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()
