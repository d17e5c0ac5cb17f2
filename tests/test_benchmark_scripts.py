"""The benchmark scripts' own logic (benchmarks/): the coreset, the pasted defects, the k-NN recall table."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import anchor_subset_probe  # noqa: E402  (scripts, importable from their folder)
import pointing_game  # noqa: E402


def test_k_center_keeps_each_time_the_point_farthest_from_those_kept():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0], [0.0, 5.0]])
    kept = anchor_subset_probe.k_center(points, 3, seed=0)
    assert len(set(kept.tolist())) == 3
    # Against the definition, from the same first point.
    expected = [int(kept[0])]
    for _ in range(2):
        distance = torch.cdist(points, points[expected]).min(1).values
        expected.append(int(distance.argmax()))
    assert kept.tolist() == expected
    assert 3 in kept.tolist()  # the far point is always kept (farthest from anything but itself)


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
    assert all(0.0 <= row["recall_at_1"] <= 1.0 and row["anchors"] == 300 for row in rows.values())


def test_bench_inference_times_the_default_score_on_both_runtimes():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "bench_inference.py"), "--models", "compact-cnn",
                          "--anchors", "50", "--images", "8", "--repeats", "1", "--batch-sizes", "1,4"],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out[out.index("\n[") + 1:])
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [("torch", 1), ("torch", 4), ("onnx", 1), ("onnx", 4)]
    assert all(r["score"] == "knn+excess-margin" and r["ms_per_image"] > 0 for r in rows)
