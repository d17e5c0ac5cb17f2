"""Do the heat-maps point at the defect? Pointing game on normal test images with a pasted defect.

    .venv/bin/python benchmarks/pointing_game.py runs/reproduce [--defect-size 6] [--images 1000]

For each normal test image of the run's split, a square of random noise (the "defect", ``--defect-size`` pixels)
is pasted at a random place on the object (its centre on a pixel brighter than 30). A hit: the heat-map's
maximum falls inside the square. Baselines: a uniformly random point of the image, and a random point on the
object (the pixels brighter than 30), each averaged over 100 draws per image. Also reports the AUC of the
detector's score, defective vs the same images untouched. Prints markdown, then JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.metrics import roc_auc_score

from metricad.evaluate.explain import explain
from metricad.run import open_run


def paste_defects(images: np.ndarray, size: int, rng: np.random.Generator):
    defective, boxes = images.copy(), []
    h, w = images.shape[1:]
    for i, image in enumerate(images):
        ys, xs = np.nonzero(image[size // 2:h - size + size // 2, size // 2:w - size + size // 2] > 30)
        j = rng.integers(len(ys)) if len(ys) else None
        top, left = (ys[j], xs[j]) if j is not None else (rng.integers(h - size), rng.integers(w - size))
        defective[i, top:top + size, left:left + size] = rng.integers(0, 256, (size, size))
        boxes.append((top, left))
    return defective, np.array(boxes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--defect-size", type=int, default=6)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="feature-diff,gradcam")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    run = open_run(args.run, device="cpu")
    detector, split = run.detector, run.split()
    clean = split.test_images[split.test_is_anomaly == 0][:args.images]
    defective, boxes = paste_defects(clean, args.defect_size, rng)
    n, h, w = defective.shape

    def inside(points):
        return ((points[:, 0] >= boxes[:, 0]) & (points[:, 0] < boxes[:, 0] + args.defect_size)
                & (points[:, 1] >= boxes[:, 1]) & (points[:, 1] < boxes[:, 1] + args.defect_size))

    hits = {}
    for method in args.methods.split(","):
        explanation = explain(detector, defective, method=method)
        peak = np.array(np.unravel_index(explanation.heatmaps.reshape(n, -1).argmax(1), (h, w))).T
        hits[method] = float(inside(peak).mean())
    uniform = np.mean([inside(np.c_[rng.integers(0, h, n), rng.integers(0, w, n)]).mean() for _ in range(100)])
    on_object = []
    for _ in range(100):
        points = []
        for image in defective:
            ys, xs = np.nonzero(image > 30)
            j = rng.integers(len(ys))
            points.append((ys[j], xs[j]))
        on_object.append(inside(np.array(points)).mean())
    scores_clean = detector.score_samples(clean)
    auc = roc_auc_score(np.r_[np.zeros(n), np.ones(n)], np.r_[scores_clean, explanation.scores])
    result = {"run": args.run, "images": int(n), "defect_size": args.defect_size, "pointing_game": hits,
              "random_point": float(uniform), "random_point_on_object": float(np.mean(on_object)),
              "auc_defective_vs_clean": float(auc)}
    print(f"{n} images, {args.defect_size}x{args.defect_size} px defect; AUC defective vs clean {auc:.4f}\n")
    print("| heat-map | pointing game (max inside the defect) |")
    print("|---|---:|")
    for method, rate in hits.items():
        print(f"| {method} | {rate:.3f} |")
    print(f"| random point | {uniform:.3f} |")
    print(f"| random point on the object | {result['random_point_on_object']:.3f} |")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
