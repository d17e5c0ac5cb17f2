"""The benchmark scripts' own logic (benchmarks/): the pasted defects, the k-NN recall table, the speed table, the
protocol tables."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import pointing_game  # noqa: E402  (a script, importable from its folder)


def test_pasted_defects_change_only_their_box_which_sits_on_the_object():
    images = np.zeros((20, 28, 28), np.uint8)
    images[:, 10:20, 8:22] = 200  # the "object"
    rng = np.random.default_rng(0)
    defective, boxes = pointing_game.paste_defects(images, 6, rng)
    for image, original, (top, left) in zip(defective, images, boxes):
        outside = np.ones((28, 28), bool)
        outside[top:top + 6, left:left + 6] = False
        assert np.array_equal(image[outside], original[outside])
        assert original[top + 3, left + 3] > 30  # the box's centre is on the object
    assert not np.array_equal(defective, images)


def test_bench_knn_finds_the_exact_neighbours_with_the_flat_index():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "bench_knn.py"), "--anchors", "300", "--queries", "40",
                          "--batch-size", "20", "--dim", "16"], capture_output=True, text=True, check=True).stdout
    rows = {row["index"]: row for row in json.loads(out[out.index("\n[") + 1:])}
    assert set(rows) == {"exact (torch)", "faiss-flat", "faiss-ivf", "faiss-hnsw"}
    assert rows["exact (torch)"]["recall_at_1"] == 1.0 and rows["faiss-flat"]["recall_at_1"] == 1.0
    assert all(row["anchors"] == 300 and row["queries"] == 40 for row in rows.values())


def test_bench_inference_times_the_default_score_on_both_runtimes():
    from metricad.recipe import PRESETS

    out = subprocess.run([sys.executable, str(BENCHMARKS / "bench_inference.py"), "--models", "compact-cnn",
                          "--anchors", "50", "--images", "8", "--repeats", "1", "--batch-sizes", "1,4"],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out[out.index("\n[") + 1:])
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [("torch", 1), ("torch", 4), ("onnx", 1), ("onnx", 4)]
    default = PRESETS["default"]
    assert all((r["score"], r["members"]) == (default.score, default.ensemble) for r in rows)
    assert all(r["anchors"] == 50 and 0 < r["ms_per_image"] < 10_000 for r in rows)  # timed on what it was told


def test_protocol_tables_put_both_protocols_of_a_pair_side_by_side(tmp_path, capsys):
    import protocol_tables

    def row(method, seed, auc, **few):  # as compare writes them: timings on the zero-anomaly rows only
        timings = {} if few else {"train_seconds": 1.0, "ms_per_image_batch1": 1.0, "ms_per_image_batch20": 0.1}
        return {"method": method, "fit": method, "seed": seed, "normal": 7, "anomaly": 9, "auc": auc} | timings | few

    rows = [row("pca", 0, 0.96), row("metricad", 0, 0.95), row("metricad", 1, 0.99),
            row("pca", 0, 0.96, K=5, draw=0, f1=0.5), row("pca", 0, 0.96, K=5, draw=1, f1=0.7),
            row("metricad-auto", 0, 0.98, K=5, draw=0, f1=0.8), row("metricad-auto", 1, 0.99, K=5, draw=0, f1=0.6)]
    (tmp_path / "compare.json").write_text(json.dumps({"normal": 7, "anomaly": 9, "rows": rows}))
    assert protocol_tables.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "**sneaker (7) vs ankle boot (9), seeds 0,1**"
    body = [line for line in lines if line.startswith("| ") and "method" not in line]
    # Sorted by the zero-anomaly AUC; a method measured on fewer seeds says on how many.
    assert body == ["| metricad | 0.9700 ± 0.0283 | – |", "| pca | 0.9600 (1) | 0.9600 / 0.600 |",
                    "| metricad-auto | – | 0.9850 / 0.700 |"]
    assert protocol_tables.main([str(tmp_path / "missing")]) == 2


def test_line_validation_labels_a_patch_defective_by_its_mask_cover_and_banks_exactly():
    import line_validation
    import torch

    masks = np.zeros((2, 16, 16), bool)
    masks[0, :4, :4] = True  # 16 of cell (0, 0)'s 64 pixels: a quarter, defective
    masks[1, 8:11, 8:13] = True  # 15 of cell (1, 1)'s: not
    labels = line_validation.cell_labels(masks, np.array([3, 5]))
    assert labels.shape == (2, 2, 2) and labels[0, 0, 0] == 4 and int(labels.sum()) == 4
    generator = torch.Generator().manual_seed(0)
    bank_maps, queries = torch.randn(3, 5, 4, 4, generator=generator), torch.randn(2, 5, 4, 4, generator=generator)
    bank = line_validation.Bank(size=1000).fit(bank_maps, seed=0)  # every patch kept
    flat = lambda m: m.permute(0, 2, 3, 1).reshape(-1, 5)  # noqa: E731
    expected = torch.cdist(flat(queries), flat(bank_maps)).min(1).values.reshape(2, 4, 4)
    torch.testing.assert_close(bank(queries), expected, rtol=1e-4, atol=1e-4)
