"""Scoring a detector on test images: AUC and the metrics at its threshold, the original's speed tables, its figure.

A figure at a threshold is never computed on the images that set the threshold: a run's own test images are the
Fashion-MNIST test split (never used to train, normalise, choose or threshold), and a folder run is evaluated on
``--test-dir``, which may not be the ``--val-dir`` it was thresholded on. ``metrics.json`` names both sets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from metricad.evaluate.image_metrics import evaluate
from metricad.evaluate.timing import time_scoring
from metricad.files import write_json, write_text
from metricad.layout import Layout
from metricad.run import open_run


def check_unseen(run, test_dir) -> None:
    """A run is not evaluated on the validation folder that set its threshold."""
    val_dir = run.config.get("data", {}).get("val_dir")
    if val_dir and Path(test_dir).resolve() == Path(val_dir):
        raise ValueError(f"--test-dir {test_dir} is the --val-dir that set {run.path}'s threshold: evaluate on "
                         "images the run has not seen")


def evaluation_images(run, test_dir=None, data_dir=None, skip_bad_files: bool = False):
    """``(split, description)``: the images a run is evaluated on, which must hold both kinds and must not be the
    ones its threshold was set on."""
    from metricad.data import labelled_dir_split

    data = run.config.get("data", {})
    if test_dir:
        check_unseen(run, test_dir)
        split, where = labelled_dir_split(test_dir, *run.scorer.input_spec, skip_bad_files), str(test_dir)
    else:
        split = run.split(data_dir)
        where = (f"Fashion-MNIST test images of classes {split.normal_class} and {split.anomaly_class}"
                 if data.get("dataset") != "folders" else "")
    if len(np.unique(split.test_is_anomaly)) < 2:
        raise ValueError(f"{run.path}: needs test images of both kinds, normal and anomalous, that it was not "
                         "trained or thresholded on: pass --test-dir with good/ and anomalous sub-folders")
    return split, where


def evaluate_run(path, data_dir=None, device=None, runtime: str = "torch", test_dir=None,
                 skip_bad_files: bool = False, mask_dir=None, **overrides):
    """Open a run (``overrides``: ``open_run``'s), evaluate it on its test images and merge the metrics into its
    ``metrics.json``. Returns ``(run, split, metrics, scores)``. With ``mask_dir`` (true defect masks of
    ``test_dir``'s images) the pixel metrics too (``metricad.evaluate.pixel_evaluation``)."""
    run = open_run(path, device=device, runtime=runtime, **overrides)
    if mask_dir is not None:
        return _evaluate_with_masks(run, test_dir, mask_dir, skip_bad_files)
    split, where = evaluation_images(run, test_dir, data_dir, skip_bad_files)
    metrics, scores = evaluate(run.scorer, split.test_images, split.test_is_anomaly)
    metrics["test_images"] = where
    run.update_metrics(metrics)
    return run, split, metrics, scores


def run_localization(run, test_dir, mask_dir, skip_bad_files: bool = False):
    """``metricad.evaluate.pixel_evaluation.localize`` of a run on ``test_dir`` with its masks, checked as any
    evaluation is (images it has not seen)."""
    from metricad.evaluate.pixel_evaluation import localize

    if not test_dir:
        raise ValueError("--mask-dir holds the masks of --test-dir's defect images: pass --test-dir too")
    check_unseen(run, test_dir)
    return localize(run.scorer, test_dir, mask_dir, skip_bad_files)


def _evaluate_with_masks(run, test_dir, mask_dir, skip_bad_files: bool):
    result = run_localization(run, test_dir, mask_dir, skip_bad_files)
    metrics = result.metrics | {"test_images": str(test_dir)}
    run.update_metrics(metrics)
    return run, result, metrics, result.scores


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
