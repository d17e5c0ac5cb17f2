"""``metricad reproduce``: the original experiment in one command. Train the default on sneaker vs ankle boot,
evaluate, run the original's speed tables on both runtimes, draw its figure, write the HTML report and put the
raw-pixel baselines of the same split beside the result."""

from __future__ import annotations

import time

from metricad.compare.comparison import baseline_rows
from metricad.data import CLASS_NAMES
from metricad.data.sources import FashionMNIST
from metricad.evaluate.evaluation import benchmark_run, evaluate_run, plot_extremes
from metricad.evaluate.report import report_run
from metricad.layout import Layout
from metricad.recipe import ORIGINAL_ANCHOR_COUNTS, RUNTIMES
from metricad.train.pipeline import train_run

ORIGINAL_AUC = 0.9066  # the 2019 post, sneaker vs ankle boot


def reproduce(out, config, normal: int = 7, anomaly: int = 9, limit=None, data_dir=None, device=None,
              overwrite: bool = False, val_anomalies: int = 0, val_seed: int = 0,
              detector_params: dict | None = None) -> list[str]:
    """Run the whole job into the run directory ``out``; returns the summary lines it prints.
    ``detector_params``: the run's detector options (``index``, a coreset of anchors)."""
    start = time.perf_counter()
    source = FashionMNIST(normal, anomaly, limit, data_dir, val_anomalies, val_seed)
    path = train_run(out, config, source, detector_params=detector_params, device=device, overwrite=overwrite)
    run, split, metrics, scores = evaluate_run(path, data_dir, device)
    # The original's anchor counts, from all the run has (5,400 when 10 % of the 6,000 sneakers are held out).
    anchor_counts = [len(split.anchor_images)] + [n for n in ORIGINAL_ANCHOR_COUNTS if n < len(split.anchor_images)]
    markdown = benchmark_run(path, anchor_counts, [1, 20], data_dir, device, RUNTIMES)
    plot_extremes(split.test_images, split.test_is_anomaly, scores, Layout(path).figure)
    report, _ = report_run(path, data_dir=data_dir, device=device)
    baselines = {row["method"]: {"auc": row["auc"], "seconds": row["train_seconds"]} for row in baseline_rows(split)}
    run.update_metrics({"baselines": baselines})
    training = run.config["training"]
    return [markdown, "Same split, raw-pixel baselines fitted on the normal training images:",
            *(f"  {name:<12} AUC {result['auc']:.4f}  ({result['seconds']:.1f} s)"
              for name, result in baselines.items()),
            f"run directory: {path}",
            f"model {run.config['models'][0]['name']} x {training['ensemble']}, loss {training['loss']}, labels "
            f"{training['labels']}, {training['epochs']} epochs in {run.config['training_seconds']:.0f} s; score "
            f"{run.detector.score}",
            f"metricad AUC {CLASS_NAMES[normal]} (normal) vs {CLASS_NAMES[anomaly]} (anomaly): {metrics['auc']:.4f}"
            f"   (original post, sneaker vs ankle boot: {ORIGINAL_AUC})",
            f"figure: {Layout(path).figure}   report: {report}   total wall time {time.perf_counter() - start:.0f} s"]
