"""Everywhere a score goes, the map goes: ``metricad score --maps`` from a run and, without torch, from its bundle
(the same maps at each file's resolution, to 1e-4 of their range), the 16-bit PNG's stated scale, the
overlays, folders kept; the Parquet rows' defect boxes; a score without a patch expert refused by name."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metricad.cli import main
from metricad.localization import normalized_map, to_size
from metricad.run import open_run
from tests.serve.helpers import light


@pytest.fixture(scope="module")
def patch_bundle(patch_run, tmp_path_factory):
    run, _ = patch_run
    bundle = tmp_path_factory.mktemp("patch-bundle") / "part.onnx"
    assert main(["export", str(run), "--out", str(bundle)]) == 0
    return bundle


def _files(data: Path) -> list[str]:
    return sorted(str(p) for p in (data / "test").rglob("*.png"))


def _run_maps(run, files):
    detector = open_run(run, device="cpu").detector
    channels, size = detector.input_spec
    from metricad.data import load_images

    _, images = load_images(files, size, channels)
    scores, maps = detector.score_with_maps(images)
    return detector, scores, [to_size(m, (60, 80)) for m in maps]


def test_the_bundle_writes_the_runs_maps_without_torch(patch_run, patch_bundle, tmp_path):
    run, data = patch_run
    files = _files(data)
    result = light("score", str(patch_bundle), str(data / "test"), "--maps", str(tmp_path / "maps"),
                   "--map-format", "tiff")
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()]
    assert rows[0] == ["path", "score", "label", "defect_pixels", "map", "overlay"]
    assert [r[0] for r in rows[1:]] == files
    detector, scores, expected = _run_maps(run, files)
    for row, want in zip(rows[1:], expected):
        assert Path(row[4]).relative_to(tmp_path / "maps").parts[0] in ("good", "spot")  # folders kept
        got = np.asarray(Image.open(row[4]))
        assert got.dtype == np.float32 and got.shape == (60, 80)  # the file's resolution, not the model's 48x64
        assert np.abs(got - want).max() <= 1e-4 * np.ptp(want)
        assert Image.open(row[5]).size == (80, 60) and Image.open(row[5]).mode == "RGB"
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], scores, rtol=1e-4, atol=1e-4 * np.ptp(scores))
    spots = [int(r[3]) for r in rows[1:] if "/spot/" in r[0]]
    assert min(spots) > 0 and all(int(r[3]) == 0 for r in rows[1:] if r[2] == "normal")


def test_the_16_bit_png_holds_the_normalised_map(patch_run, tmp_path):
    run, data = patch_run
    files = _files(data)[-2:]
    assert main(["score", str(run), *files, "--maps", str(tmp_path)]) == 0
    detector, _, expected = _run_maps(run, files)
    for file, want in zip(files, expected):
        png = Image.open(tmp_path / f"{Path(file).stem}_map.png")
        assert png.mode.startswith("I")  # 16-bit greyscale
        levels = np.asarray(png).astype(np.float64) / 65535
        np.testing.assert_allclose(levels, normalized_map(want, detector.pixel_offset_), atol=1 / 65535)


def test_the_parquet_rows_carry_the_defect_boxes(patch_run, patch_bundle, tmp_path):
    import pyarrow.parquet as pq

    run, data = patch_run
    assert main(["score", str(patch_bundle), str(data / "test"), "--out", str(tmp_path / "out"), "--boxes"]) == 0
    table = pq.read_table(tmp_path / "out").to_pydict()
    detector, scores, maps = _run_maps(run, table["path"])
    flagged = [label == "anomaly" for label in table["label"]]
    # both kinds of row are checked: every spot flagged (5 of 5), every good image passed
    assert [f for f, path in zip(flagged, table["path"]) if "/spot/" in path] == [True] * 5
    assert not any(f for f, path in zip(flagged, table["path"]) if "/good/" in path)
    for path, is_flagged, area, boxes, m, s in zip(table["path"], flagged, table["defect_area"],
                                                  table["defect_boxes"], maps, scores):
        # the mask by its definition: in a flagged image, the pixels above the pixel threshold
        mask = (m > detector.pixel_offset_) & (s > detector.offset_)
        assert area == int(mask.sum()) and (area > 0) == is_flagged and (boxes != []) == is_flagged
        inside = np.zeros_like(mask)
        for x0, y0, x1, y1 in boxes:  # in the file's pixels, each box tight around defect pixels
            assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
            assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any() and mask[y0:y1, x0].any()
            inside[y0:y1, x0:x1] = True
        assert mask[~inside].sum() == 0
        if is_flagged:  # the largest box holds the true spot's centre
            truth = np.asarray(Image.open(path.replace("/test/", "/masks/").replace(".png", "_mask.png"))) > 0
            cy, cx = (int(v.mean()) for v in np.nonzero(truth))
            x0, y0, x1, y1 = boxes[0]
            assert x0 <= cx < x1 and y0 <= cy < y1, (path, boxes[0], (cx, cy))
    # a rerun asks for the same columns: nothing is scored twice
    assert main(["score", str(patch_bundle), str(data / "test"), "--out", str(tmp_path / "out"), "--boxes"]) == 0
    assert len(pq.read_table(tmp_path / "out")) == len(table["path"])


def test_a_score_without_a_patch_expert_is_refused_by_name(trained_run, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    assert main(["score", str(trained_run), str(image), "--maps", str(tmp_path / "maps")]) == 2
    score = json.loads((trained_run / "config.json").read_text())["detector"]["score"]
    assert f"score {score!r} has no anomaly map" in capsys.readouterr().err
    assert not (tmp_path / "maps").exists()


def test_the_ray_engine_writes_the_same_defect_boxes(patch_bundle, patch_run, tmp_path):
    pytest.importorskip("ray")
    import pyarrow.parquet as pq

    _, data = patch_run
    for engine in ("local", "ray"):
        assert main(["score", str(patch_bundle), str(data / "test"), "--out", str(tmp_path / engine), "--boxes",
                     "--engine", engine, "--chunk-size", "4"]) == 0
    local, ray = (pq.read_table(tmp_path / e).to_pandas().sort_values("path") for e in ("local", "ray"))
    assert list(local.path) == list(ray.path) and list(local.defect_area) == list(ray.defect_area)
    assert [list(map(list, b)) for b in local.defect_boxes] == [list(map(list, b)) for b in ray.defect_boxes]
