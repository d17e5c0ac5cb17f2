"""Scoring a detector on test images: AUC and the metrics at its threshold, the original's speed tables, its figure.

A figure at a threshold is never computed on the images that set the threshold: a run's own test images are the
Fashion-MNIST test split (never used to train, normalise, choose or threshold), and a folder run is evaluated on
``--test-dir``, which may not be the ``--val-dir`` it was thresholded on. ``metrics.json`` names both sets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from metricad.files import write_json, write_text
from metricad.evaluate.timing import time_scoring
from metricad.layout import Layout
from metricad.run import open_run


def evaluate(detector, images: np.ndarray, is_anomaly: np.ndarray) -> tuple[dict, np.ndarray]:
    """Threshold-free metrics (ROC AUC, average precision) and the confusion counts at the detector's threshold."""
    scores = detector.score_samples(images)
    predicted = detector.predict_scores(scores).astype(bool)
    truth = np.asarray(is_anomaly).astype(bool)
    tp, fp = int(np.sum(predicted & truth)), int(np.sum(predicted & ~truth))
    fn, tn = int(np.sum(~predicted & truth)), int(np.sum(~predicted & ~truth))
    metrics = {
        "auc": float(roc_auc_score(truth, scores)),
        "average_precision": float(average_precision_score(truth, scores)),
        "n_test_normal": int(np.sum(~truth)), "n_test_anomaly": int(np.sum(truth)),
        "n_anchors": len(detector.anchor_indices_), "k": detector.k, "score": detector.score,
        "threshold": detector.offset_, "threshold_set_on": detector.threshold_set_on_,
        "at_threshold": {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
                         "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
                         "f1": 2 * tp / max(2 * tp + fp + fn, 1),
                         "false_positive_rate": fp / max(fp + tn, 1)},
    }
    return metrics, scores


def evaluation_images(run, test_dir=None, data_dir=None, skip_bad_files: bool = False):
    """``(split, description)``: the images a run is evaluated on, which must hold both kinds and must not be the
    ones its threshold was set on."""
    from metricad.data import labelled_dir_split

    data = run.config.get("data", {})
    if test_dir:
        if data.get("val_dir") and Path(test_dir).resolve() == Path(data["val_dir"]):
            raise ValueError(f"--test-dir {test_dir} is the --val-dir that set {run.path}'s threshold: evaluate on "
                             "images the run has not seen")
        split, where = labelled_dir_split(test_dir, *run.detector.input_spec, skip_bad_files), str(test_dir)
    else:
        split = run.split(data_dir)
        where = (f"Fashion-MNIST test images of classes {split.normal_class} and {split.anomaly_class}"
                 if data.get("dataset") != "folders" else "")
    if len(np.unique(split.test_is_anomaly)) < 2:
        raise ValueError(f"{run.path}: needs test images of both kinds, normal and anomalous, that it was not "
                         "trained or thresholded on: pass --test-dir with good/ and anomalous sub-folders")
    return split, where


def evaluate_run(path, data_dir=None, device=None, runtime: str = "torch", test_dir=None,
                 skip_bad_files: bool = False, **overrides):
    """Open a run (``overrides``: ``open_run``'s), evaluate it on its test images and merge the metrics into its
    ``metrics.json``. Returns ``(run, split, metrics, scores)``."""
    run = open_run(path, device=device, runtime=runtime, **overrides)
    split, where = evaluation_images(run, test_dir, data_dir, skip_bad_files)
    metrics, scores = evaluate(run.detector, split.test_images, split.test_is_anomaly)
    metrics["test_images"] = where
    run.update_metrics(metrics)
    return run, split, metrics, scores


def benchmark(detector, images: np.ndarray, is_anomaly: np.ndarray, anchor_counts, batch_sizes, model_name: str,
              runtime: str = "torch", progress=None) -> list[dict]:
    """The original's tables: for each anchor count (the first N, as the original) and batch size, the total
    seconds to score all test images, the AUC and ms/image."""
    rows = []
    subsets = {n: detector.refit(n_anchors=n, anchor_sampling="first") for n in anchor_counts}
    for batch_size in batch_sizes:
        for n, sub in subsets.items():
            scores, seconds = time_scoring(sub, images, batch_size)
            rows.append({"runtime": runtime, "model": model_name, "anchors": n, "batch_size": batch_size,
                         "seconds_total": seconds, "auc": float(roc_auc_score(is_anomaly, scores)),
                         "ms_per_image": 1000.0 * seconds / len(images)})
            if progress:
                progress(rows[-1])
    return rows


def benchmark_run(path, anchor_counts, batch_sizes, data_dir=None, device=None, runtimes=("torch",)) -> str:
    """The speed tables of a run on its test split, per runtime; written to ``benchmark.json``/``benchmark.md``."""
    def show(row):
        print(f"  {row['runtime']:>5}  batch {row['batch_size']:>4}  anchors {row['anchors']:>5}  "
              f"AUC {row['auc']:.4f}  {row['ms_per_image']:.3f} ms/image", file=sys.stderr)

    rows, run = [], None
    for runtime in runtimes:
        run = open_run(path, device=device, runtime=runtime)
        split, _ = evaluation_images(run, data_dir=data_dir)
        available = len(run.detector.normal_images_)
        too_many = [n for n in anchor_counts if n > available]
        if too_many:
            raise ValueError(f"--anchors {too_many} exceed the {available} anchors stored in {path}")
        rows += benchmark(run.detector, split.test_images, split.test_is_anomaly, anchor_counts, batch_sizes,
                          run.config["models"][0]["name"], runtime=runtime, progress=show)
    markdown = benchmark_markdown(rows, len(split.test_images))
    write_json(Layout(run.path).benchmark_json, rows)
    write_text(Layout(run.path).benchmark_md, markdown)
    return markdown


def benchmark_markdown(rows: list[dict], n_images: int) -> str:
    lines = []
    groups = dict.fromkeys((r["runtime"], r["batch_size"]) for r in rows)  # first-seen order
    for runtime, batch_size in groups:
        sub = [r for r in rows if (r["runtime"], r["batch_size"]) == (runtime, batch_size)]
        lines += [f"Batch size {batch_size} ({sub[0]['model']}, {runtime} runtime):", "",
                  f"| anchors | seconds for {n_images} images | AUC | ms/image |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['anchors']} | {r['seconds_total']:.2f} | {r['auc']:.4f} | {r['ms_per_image']:.3f} |"
                  for r in sub]
        lines.append("")
    return "\n".join(lines)


def plot_extremes(images: np.ndarray, is_anomaly: np.ndarray, scores: np.ndarray, path: Path,
                  per_group: int = 8) -> Path:
    """The original's figure: the anomalies least like the normal class (highest scores, top two rows) and the
    ones most like it (lowest scores, bottom two rows), each titled with its score."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anomalies = np.flatnonzero(np.asarray(is_anomaly) == 1)
    ranked = anomalies[np.argsort(scores[anomalies])]
    chosen = list(ranked[::-1][:per_group]) + list(ranked[:per_group])
    cols = 4
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2, rows * 2.2))
    for ax, i in zip(np.ravel(axes), chosen):
        ax.imshow(np.squeeze(images[i]), cmap="gray")
        ax.set_title(f"score={scores[i]:.4g}", fontsize=9)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle("Anomalies least (top) and most (bottom) like the normal class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
