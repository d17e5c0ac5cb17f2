"""One self-contained HTML page about a run on its test images: ROC, score histograms, the confusion matrix at
the threshold, and the extremes with heat-maps. With true defect masks (``--mask-dir``), also where the defect
is: pixel ROC and PRO curves, each defect type's AUROC, the most anomalous images and the missed defects with the
anomaly map beside the true and the predicted mask. Figures are embedded as base64 PNGs, so the page is one file
that can be mailed or archived."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from metricad.evaluate.evaluation import evaluation_images, run_localization
from metricad.evaluate.explain import explain
from metricad.evaluate.image_metrics import evaluate
from metricad.files import write_text
from metricad.layout import Layout
from metricad.run import open_run


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _roc_figure(truth, scores, auc):
    plt = _plots()
    fpr, tpr, _ = roc_curve(truth, scores)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(fpr, tpr, label=f"AUC {auc:.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _histogram_figure(truth, scores, threshold):
    plt = _plots()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    # A few far outliers would squash the rest; the threshold stays in view (a score may be negative).
    top = max(float(np.quantile(scores, 0.99)), threshold + 0.1 * (abs(threshold) or 1.0))
    bins = np.linspace(scores.min(), top, 50)
    clipped = np.minimum(scores, top)  # the last bin holds everything above
    ax.hist(clipped[truth == 0], bins=bins, alpha=0.6, label="normal")
    ax.hist(clipped[truth == 1], bins=bins, alpha=0.6, label="anomalous")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel(f"anomaly score (mean of the experts' z-scores; last bin: >= {top:.2f})")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def _gallery(images, heatmaps, scores, flagged):
    plt = _plots()
    n = len(images)
    fig, axes = plt.subplots(2, max(n, 1), figsize=(1.5 * max(n, 1), 3.4), squeeze=False)
    for i in range(n):
        image = images[i] if images[i].ndim == 2 else images[i].transpose(1, 2, 0)
        for row in (0, 1):
            axes[row, i].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[row, i].axis("off")
        axes[1, i].imshow(heatmaps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[0, i].set_title(f"{scores[i]:.3f}" + (" NG" if flagged[i] else " OK"), fontsize=8)
    for ax in axes.flat[2 * n:]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _pixel_curves_figure(curves, metrics):
    plt = _plots()
    fig, (roc, pro) = plt.subplots(1, 2, figsize=(8.4, 4))
    roc.plot(curves["fpr"], curves["tpr"], label=f"pixel AUC {metrics['pixel_auroc']:.4f}")
    roc.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    roc.set(xlabel="false-positive rate (defect-free pixels)", ylabel="true-positive rate (defect pixels)",
            title="pixel ROC")
    limit = metrics["aupro_fpr_limit"]
    keep = curves["fpr"] <= limit
    pro.plot(curves["fpr"][keep], curves["pro"][keep], label=f"AUPRO {metrics['aupro']:.4f} (to FPR {limit})")
    pro.set(xlabel="false-positive rate (defect-free pixels)", ylabel="per-region overlap", xlim=(0, limit),
            ylim=(0, 1.02), title="PRO curve")
    for ax in (roc, pro):
        ax.legend(loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _map_gallery(result, indices, detector):
    """One row per image: the image, its map over it, the true mask, the predicted mask."""
    from metricad.localization import overlay

    plt = _plots()
    rows = max(len(indices), 1)
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows), squeeze=False)
    for row, i in enumerate(indices):
        from PIL import Image

        with Image.open(result.paths[i]) as img:
            original = np.asarray(img.convert("L" if detector.input_spec[0] == 1 else "RGB"))
        predicted = detector.predict_masks(result.scores[i:i + 1], result.maps[i][None])[0]
        panels = (original, overlay(original, result.maps[i], detector.pixel_offset_, predicted), result.masks[i],
                  predicted)
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255 if col < 2 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
        flag = "NG" if detector.predict_scores(result.scores[i:i + 1])[0] else "OK"
        axes[row, 0].set_ylabel(f"{result.types[i]}\n{result.scores[i]:.2f} {flag}", fontsize=8)
    for col, name in enumerate(("image", "anomaly map", "true mask", "predicted mask")):
        axes[0, col].set_title(name, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _localization_section(detector, result, n_examples: int) -> str:
    metrics = result.metrics
    anomalous = np.flatnonzero(result.is_anomaly == 1)
    flagged = detector.predict_scores(result.scores).astype(bool)
    most = np.argsort(-result.scores)[:n_examples]
    missed = [i for i in anomalous[np.argsort(result.scores[anomalous])] if not flagged[i]][:n_examples]
    types = "".join(f"<tr><td>{html.escape(kind)}</td><td>{auc:.4f}</td>"
                    f"<td>{metrics['pixel_auroc_by_type'][kind]:.4f}</td><td>{metrics['aupro_by_type'][kind]:.4f}</td>"
                    f"<td>{np.sum(np.array(result.types) == kind)}</td></tr>" for kind, auc in metrics["auc_by_type"].items())
    at = metrics["pixel_at_threshold"]
    galleries = [("The most anomalous test images: image, anomaly map, true mask, predicted mask", most)]
    galleries.append(("The missed defects (below the image threshold), most normal-looking first", missed))
    figures = "".join(f"<figure><img alt='{html.escape(c)}' src='{_map_gallery(result, list(ix), detector)}'>"
                      f"<figcaption>{html.escape(c)}</figcaption></figure>" if len(ix) else
                      f"<p>{html.escape(c)}: none.</p>" for c, ix in galleries)
    return f"""<h2>Where the defect is</h2>
<table><tr><th>pixel ROC AUC</th><td>{metrics['pixel_auroc']:.4f}</td></tr>
<tr><th>AUPRO (to FPR {metrics['aupro_fpr_limit']})</th><td>{metrics['aupro']:.4f}
({metrics['n_defect_regions']} defect regions)</td></tr>
<tr><th>defect masks at the thresholds</th><td>pixel precision {at['precision']:.3f}, recall {at['recall']:.3f},
F1 {at['f1']:.3f}, IoU {at['iou']:.3f}</td></tr></table>
<table><tr><th>defect type</th><th>image ROC AUC against the good images</th><th>pixel ROC AUC</th><th>AUPRO</th>
<th>images</th></tr>{types}</table>
<figure><img alt="pixel ROC and PRO curves" src="{_pixel_curves_figure(result.curves, metrics)}">
<figcaption>Pixel ROC and PRO curves over every pixel of the test images</figcaption></figure>
{figures}"""


def _heatmaps(detector, images) -> np.ndarray:
    """In [0, 1]: a patch-level score's own anomaly maps (0.5 at the pixel threshold), else ``explain``'s."""
    if getattr(detector, "has_map", False):
        from metricad.localization import normalized_map

        return normalized_map(detector.score_with_maps(images)[1], detector.pixel_offset_)
    return explain(detector, images).heatmaps


def build_report(detector, images: np.ndarray, is_anomaly: np.ndarray, title: str,
                 details: dict | None = None, n_examples: int = 8, localization=None) -> tuple[str, dict]:
    """The HTML page and the metrics it shows; ``localization`` (``metricad.evaluate.pixel_evaluation.localize``'s
    result on the same images) adds where the defect is."""
    if localization is not None:
        metrics, scores = localization.metrics, localization.scores
    else:
        metrics, scores = evaluate(detector, images, is_anomaly)
    truth = np.asarray(is_anomaly).astype(int)
    at = metrics["at_threshold"]
    anomalous = np.flatnonzero(truth == 1)
    most_anomalous = np.argsort(-scores)[:n_examples]
    hardest = anomalous[np.argsort(scores[anomalous])][:n_examples]  # anomalies that look most normal
    galleries = []
    for indices, caption in ((most_anomalous, "The most anomalous test images (score; heat-map below)"),
                             (hardest, "The most normal-looking anomalies (missed first if below the threshold)")):
        if len(indices):
            galleries.append((caption, _gallery(images[indices], _heatmaps(detector, images[indices]),
                                                scores[indices], detector.predict_scores(scores[indices]))))
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in (details or {}).items())
    confusion = (f"<table class='cm'><tr><th></th><th>predicted normal</th><th>predicted anomaly</th></tr>"
                 f"<tr><th>normal</th><td>{at['tn']}</td><td>{at['fp']}</td></tr>"
                 f"<tr><th>anomalous</th><td>{at['fn']}</td><td>{at['tp']}</td></tr></table>")
    figures = "".join(f"<figure><img alt='{html.escape(c)}' src='{src}'><figcaption>{html.escape(c)}"
                      f"</figcaption></figure>" for c, src in galleries)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
.cm td {{ text-align: right; min-width: 6em; }} figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
.row {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{rows}
<tr><th>test images</th><td>{metrics['n_test_normal']} normal, {metrics['n_test_anomaly']} anomalous</td></tr>
<tr><th>ROC AUC</th><td>{metrics['auc']:.4f}</td></tr>
<tr><th>average precision</th><td>{metrics['average_precision']:.4f}</td></tr>
<tr><th>threshold</th><td>{metrics['threshold']:.4f} ({html.escape(str(detector.threshold_set_on_.get('mode')))})</td></tr>
<tr><th>at the threshold</th><td>precision {at['precision']:.3f}, recall {at['recall']:.3f}, F1 {at['f1']:.3f},
false-positive rate {at['false_positive_rate']:.3f}</td></tr>
</table>
<div class="row">
<figure><img alt="ROC curve" src="{_roc_figure(truth, scores, metrics['auc'])}"><figcaption>ROC curve</figcaption></figure>
<figure><img alt="score histograms" src="{_histogram_figure(truth, scores, detector.offset_)}">
<figcaption>Scores of normal and anomalous test images, and the threshold</figcaption></figure>
</div>
<h2>Confusion matrix at the threshold</h2>
{confusion}
<h2>Examples</h2>
{figures}
{_localization_section(detector, localization, n_examples) if localization is not None else ""}
</body></html>
"""
    return page, metrics


def report_run(path, test_dir=None, out=None, data_dir=None, device=None, skip_bad_files: bool = False,
               mask_dir=None):
    """Write a run's report on its test images (or ``test_dir``, with its true masks in ``mask_dir``) to ``out``
    (default RUN/report.html); returns the page's path and its metrics."""
    run = open_run(path, device=device)
    if mask_dir is not None:  # the test images as localize read them: not read again
        localization = run_localization(run, test_dir, mask_dir, skip_bad_files)
        images, is_anomaly, where = localization.images, localization.is_anomaly, str(test_dir)
    else:
        localization, (split, where) = None, evaluation_images(run, test_dir, data_dir, skip_bad_files)
        images, is_anomaly = split.test_images, split.test_is_anomaly
    training = run.config.get("training", {})
    details = {"run": str(run.path), "model": run.config["models"][0]["name"],
               "training": ", ".join(f"{k} {training.get(k)}" for k in ("loss", "labels", "epochs", "ensemble")),
               "score": run.detector.score, "anchors": len(run.detector.anchor_indices_),
               "test set": where or test_dir}
    page, metrics = build_report(run.scorer, images, is_anomaly, f"metricad report: {run.path.name}", details,
                                 localization=localization)
    return write_text(Path(out) if out else Layout(run.path).report, page), metrics
