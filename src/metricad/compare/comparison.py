"""Every method on the same split, the same backbone and training budget, the same k-NN scoring: one table.

Methods: ``raw-pixels``, ``pca``, ``iforest`` (no deep training), ``doc`` (Perera & Patel; also reported as
``doc-lof``, scored by LOF as the cited Keras version did), ``binary`` (a normal-vs-reference classifier; scored
by k-NN on its features, and as ``binary-prob`` by its probability), ``seed`` (the original triplet
configuration: seed loss, binary labels), ``metricad`` (the default recipe and score; with several experts,
also each expert alone on the same models, as ``metricad[knn]``, ``metricad[margin]``, ..., and the patch-level
expert on them, ``metricad[patch]``) and ``pretrained`` (the folder default: EfficientNet-Lite0's ImageNet features,
not trained, scored patch by patch).
The trained methods share everything in the default recipe (backbone, epochs, schedule, augmentation, split) but
the loss, the labels, metricad's shifted negatives and ensemble; the baselines train as their papers define them.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from metricad import selection
from metricad.compare.baselines import BASELINES
from metricad.data import CLASS_NAMES, AnomalySplit, load_split, validation_split
from metricad.data.sources import FashionMNIST
from metricad.evaluate.timing import ms_per_image
from metricad.files import write_json, write_text
from metricad.preprocessing import to_model_input
from metricad.recipe import METHODS, PRESETS, TrainConfig
from metricad.scoring.spec import ScoreSpec

# The baselines train on the normal and reference images alone, one model each, without the shifted negatives
# (rotated normal images as extra classes) that are part of metricad's own recipe, scored by the k-NN distance.
_TRAINED = {"metricad": {},
            "seed": {"loss": "seed", "labels": "binary", "negatives": [], "score": "knn", "ensemble": 1},
            "doc": {"loss": "doc", "labels": "fine", "negatives": [], "score": "knn", "ensemble": 1},
            "binary": {"loss": "binary", "labels": "fine", "negatives": [], "score": "knn", "ensemble": 1}}
TIMING_IMAGES = 200  # ms/image is measured on this many test images (enough for a median-free mean)


def method_config(method: str, base: TrainConfig | None = None) -> TrainConfig:
    base = base or PRESETS["default"]
    if method == "metricad":
        return base
    # The baselines keep raw (not unit-length) features: the unit length suits metricad's angular CosFace loss,
    # while DOC's compactness and the classifiers' linear heads are defined on the raw features.
    kwargs = {k: v for k, v in base.model_kwargs.items() if k != "normalize"}
    return replace(base, model_kwargs=kwargs, **_TRAINED[method])


class _Embedder:
    """Batched embeddings of a trained model, for the scorers below."""

    def __init__(self, model, device, batch_size: int = 512):
        self.model, self.device, self.batch_size = model.eval(), device, batch_size

    @torch.inference_mode()
    def __call__(self, images) -> torch.Tensor:
        x = to_model_input(images, self.model.in_channels, self.model.input_size)
        return torch.cat([self.model(x[i:i + self.batch_size].to(self.device)).cpu()
                          for i in range(0, len(x), self.batch_size)])


class ProbabilityScorer:
    """The binary classifier's own score: its probability that an image is not normal."""

    def __init__(self, model, head, device=None):
        self.embed, self.head = _Embedder(model, device), head.cpu()

    def score_samples(self, images) -> np.ndarray:
        return self.head.anomaly_probability(self.embed(images)).numpy()


class LOFScorer:
    """How the cited Keras DOC scored: Local Outlier Factor (k=5) on min-max scaled features of the normal images."""

    def __init__(self, model, normal_images, n_neighbors: int = 5, device=None):
        from sklearn.neighbors import LocalOutlierFactor
        from sklearn.preprocessing import MinMaxScaler

        self.embed = _Embedder(model, device)
        features = self.embed(normal_images).numpy()
        self.scaler = MinMaxScaler().fit(features)
        self.lof = LocalOutlierFactor(n_neighbors=n_neighbors, novelty=True).fit(self.scaler.transform(features))

    def score_samples(self, images) -> np.ndarray:
        return -self.lof.score_samples(self.scaler.transform(self.embed(images).numpy()))  # sklearn: high = normal


def fit_method(method: str, split: AnomalySplit, seed: int, base: TrainConfig | None = None, device=None) -> dict:
    """Fit one method; return ``{name: scorer}`` (several for ``binary``, ``doc`` and a multi-expert
    ``metricad``) and the training seconds."""
    from metricad.train.loop import train_embedding
    from metricad.train.pipeline import fit_detector, train_members

    start = time.perf_counter()
    if method in BASELINES:
        baseline = BASELINES[method]
        scorers = {method: (baseline() if baseline.deterministic else baseline(seed=seed)).fit(split.anchor_images)}
    elif method == "metricad":
        config = replace(method_config(method, base), seed=seed)
        models, _ = train_members(config, split, device=device, progress=False)
        # Every expert fitted once; the default's score and each expert alone share them (no image embedded twice).
        union = fit_detector(models, split, selection.union_for(models), device=device)
        scorers = {method: union.with_score(config.score)}
        keys = ScoreSpec.parse(config.score).keys
        if len(keys) > 1:  # each expert alone, from the same models and anchors
            scorers |= {f"{method}[{key}]": union.with_score(key) for key in keys}
        scorers[f"{method}[patch]"] = fit_detector(models, split, "patch", device=device)  # patch-level, same models
        return {"scorers": scorers, "union": union, "train_seconds": time.perf_counter() - start}
    elif method == "pretrained":  # EfficientNet-Lite0's ImageNet features as they are, scored patch by patch
        config = FashionMNIST.for_pretrained(PRESETS["inspection"])
        models, _ = train_members(config, split, device=device, progress=False)
        scorers = {method: fit_detector(models, split, config.score, device=device)}
    elif method in _TRAINED:
        config = replace(method_config(method, base), seed=seed)
        normal_label = split.normal_label(config.labels)
        model, _, head = train_embedding(config, split.train_images, split.training_labels(config.labels),
                                         device=device, progress=False, return_loss=True, normal_label=normal_label)
        scorers = {method: fit_detector([model], split, config.score, device=device)}
        if method == "binary":
            scorers["binary-prob"] = ProbabilityScorer(model, head, device)
        if method == "doc":
            scorers["doc-lof"] = LOFScorer(model, split.anchor_images, device=device)
    else:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return {"scorers": scorers, "train_seconds": time.perf_counter() - start}


def compare(split: AnomalySplit, methods, seeds, base: TrainConfig | None = None, device=None,
            progress=None, reuse: dict | None = None, val_anomalies=(), draws: int = 3) -> list[dict]:
    """One row per (method, seed): AUC, training seconds, ms/image at batch 1 and 20. A deterministic baseline
    is fitted for the first seed only. ``reuse`` (from ``reusable_rows``) holds rows measured before with the
    same configuration: those methods are not refitted. ``val_anomalies`` (K values): also the rows of the
    few-anomaly protocol (``selection.few_anomaly_rows``), marked with their K."""
    rows = []
    timing_images = split.test_images[:TIMING_IMAGES]
    for seed in seeds:
        for method in methods:
            if method in BASELINES and BASELINES[method].deterministic and seed != seeds[0]:
                continue
            earlier = (reuse or {}).get((split.normal_class, split.anomaly_class, method, seed))
            if earlier:
                for row in earlier:
                    rows.append(row)
                    if progress:
                        progress(row)
                continue
            torch.manual_seed(seed)
            fitted = fit_method(method, split, seed, base, device)
            fields = {"fit": method, "seed": seed, "normal": split.normal_class, "anomaly": split.anomaly_class,
                      "train_seconds": fitted["train_seconds"]}
            test_scores = {}
            for name, scorer in fitted["scorers"].items():
                scores = test_scores[name] = scorer.score_samples(split.test_images)
                rows.append(fields | {"method": name, "auc": float(roc_auc_score(split.test_is_anomaly, scores)),
                                      "ms_per_image_batch1": ms_per_image(scorer, timing_images, 1),
                                      "ms_per_image_batch20": ms_per_image(scorer, timing_images, 20)})
                if progress:
                    progress(rows[-1])
            if val_anomalies:
                rows += selection.few_anomaly_rows(split, fitted["scorers"], fitted.get("union"), val_anomalies,
                                                   draws, fields, test_scores)
    return rows


def baseline_rows(split: AnomalySplit) -> list[dict]:
    """The raw-pixel baselines on ``split`` (seconds each), as ``metricad reproduce`` prints them."""
    return compare(split, [m for m in METHODS if m in BASELINES], [0])


def reusable_rows(previous: dict, source: str, base: TrainConfig, split_kind, limit, few=([], 3)) -> dict:
    """The rows of an earlier ``compare.json`` (``previous``, read from ``source``) that this comparison would
    measure again: same split kind (``"test"`` or the validation stand-ins), ``limit`` and few-anomaly protocol
    (``few``: K values and draws), and for trained methods the same training configuration but the seed.
    Keyed ``(normal, anomaly, method, seed)``."""
    previous = {"val_anomalies": [], "draws": 3} | previous  # files written before the few-anomaly protocol
    for key, wanted in (("split", split_kind), ("limit", limit), ("val_anomalies", list(few[0])),
                        ("draws", few[1] if few[0] else previous["draws"])):
        if key not in previous:
            raise ValueError(f"{source} does not record its {key!r}: it was written by an older metricad and "
                             "cannot be reused")
        if previous[key] != wanted:
            raise ValueError(f"{source} was measured with {key} {previous[key]!r}, this comparison uses {wanted!r}")
    earlier_base = TrainConfig.from_dict(previous["training"])
    changed = {method for method in _TRAINED if replace(method_config(method, earlier_base), seed=0)
               != replace(method_config(method, base), seed=0)}
    reusable = {}
    for row in (r for p in previous.get("pairs", [previous]) for r in p["rows"]):
        if row["fit"] not in changed:
            reusable.setdefault((row["normal"], row["anomaly"], row["fit"], row["seed"]), []).append(
                row | {"reused_from": row.get("reused_from", source)})
    return reusable


def summarize(rows: list[dict]) -> list[dict]:
    """The zero-anomaly rows per method: AUC mean and spread over seeds, training and scoring times."""
    rows = [r for r in rows if "K" not in r]
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        sub = [r for r in rows if r["method"] == method]
        aucs = [r["auc"] for r in sub]
        sources = sorted({r["reused_from"] for r in sub if "reused_from" in r})
        summary.append({"method": method, "seeds": len(sub), "auc_mean": statistics.mean(aucs),
                        "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
                        "train_seconds": statistics.mean(r["train_seconds"] for r in sub),
                        "ms_per_image_batch1": statistics.median(r["ms_per_image_batch1"] for r in sub),
                        "ms_per_image_batch20": statistics.median(r["ms_per_image_batch20"] for r in sub),
                        **({"reused_from": sources} if sources else {})})
    return summary


def summary_markdown(summary: list[dict], title: str) -> str:
    lines = [f"{title}", "", "| method | AUC mean ± std | seeds | training s | ms/image b1 | ms/image b20 |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in sorted(summary, key=lambda s: -s["auc_mean"]):
        lines.append(f"| {s['method']} | {s['auc_mean']:.4f} ± {s['auc_std']:.4f} | {s['seeds']} | "
                     f"{s['train_seconds']:.1f} | {s['ms_per_image_batch1']:.3f} | {s['ms_per_image_batch20']:.3f} |")
    reused = [f"{s['method']} ({', '.join(s['reused_from'])})" for s in summary if s.get("reused_from")]
    if reused:
        lines += ["", "Rows reused from earlier runs of the same configuration: " + "; ".join(reused) + "."]
    return "\n".join(lines) + "\n"


def summarize_few(rows: list[dict]) -> list[dict]:
    """The few-anomaly rows per (K, method): AUC and test F1 at the validation threshold, over seeds x draws."""
    rows = [r for r in rows if "K" in r]
    summary = []
    for k, method in dict.fromkeys((r["K"], r["method"]) for r in rows):
        sub = [r for r in rows if (r["K"], r["method"]) == (k, method)]
        aucs, chosen = [r["auc"] for r in sub], [r["chosen"] for r in sub if "chosen" in r]
        summary.append({"K": k, "method": method, "runs": len(sub), "auc_mean": statistics.mean(aucs),
                        "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
                        "f1_mean": statistics.mean(r["f1"] for r in sub),
                        **({"chosen": dict(sorted(Counter(chosen).items()))} if chosen else {})})
    return summary


def few_markdown(summary: list[dict], title: str) -> str:
    lines = []
    for k in dict.fromkeys(s["K"] for s in summary):
        lines += [f"{title} - FEW LABELLED ANOMALIES CHOOSE: K = {k} training anomalies + the held-out normal "
                  "images set each threshold (best F1) and choose metricad-auto's score", "",
                  "| method | AUC mean ± std | test F1 at the validation threshold | runs (seeds x draws) | chosen |",
                  "|---|---:|---:|---:|---|"]
        for s in sorted((s for s in summary if s["K"] == k), key=lambda s: -s["auc_mean"]):
            chosen = ", ".join(f"{name} x{n}" for name, n in s.get("chosen", {}).items())
            lines.append(f"| {s['method']} | {s['auc_mean']:.4f} ± {s['auc_std']:.4f} | {s['f1_mean']:.3f} | "
                         f"{s['runs']} | {chosen} |")
        lines.append("")
    return "\n".join(lines)


def run_comparison(out, pairs, methods, seeds, base: TrainConfig, validation=None, limit=None, reuse_from=(),
                   data_dir=None, device=None, val_anomalies=(), draws: int = 3) -> list[str]:
    """Compare ``methods`` on each (normal, anomaly) pair, writing ``compare.json`` and ``compare.md`` into
    ``out`` after every pair (a long comparison keeps what it has measured). With ``validation`` (reference
    classes), each pair is compared on validation splits against those stand-ins instead of its test images.
    ``val_anomalies`` (K values, test splits only): the few-anomaly protocol's tables too, after the
    zero-anomaly one. Returns one markdown section per pair."""
    if validation and val_anomalies:
        raise ValueError("--val-anomalies measures on the test images: it does not combine with --validation")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def show(row):
        print(f"  {row['normal']}/{row['anomaly']}  seed {row['seed']}  {row['method']:<12} AUC {row['auc']:.4f}  "
              + (f"reused from {row['reused_from']}" if "reused_from" in row else
                 f"trained in {row['train_seconds']:.0f} s"), file=sys.stderr)

    # The validation splits depend on the first seed: it is part of what a reused row must have been measured on.
    split_kind = {"stand_ins": list(validation), "seed": seeds[0]} if validation else "test"
    reuse = {}
    for earlier in reuse_from:
        reuse |= reusable_rows(_read_compare_json(earlier), str(Path(earlier) / "compare.json"), base, split_kind,
                               limit, (val_anomalies, draws))
    results, sections = [], []
    for normal, anomaly in pairs:
        # A validation split holds its normal images out itself, from the whole training split.
        split = load_split({"normal": normal, "anomaly": anomaly, "limit": limit,
                            "holdout": 0.0 if validation else base.holdout}, data_dir)
        if validation:  # never the test images nor the anomaly: for choosing settings
            splits = [validation_split(split, c, seed=seeds[0], holdout=base.holdout) for c in validation]
            anomaly = validation[0] if len(validation) == 1 else list(validation)
        else:
            splits = [split]
        rows = [row for s in splits
                for row in compare(s, methods, seeds, base, device, show, reuse, val_anomalies, draws)]
        summary = summarize(rows)  # with several stand-ins, over all of them: "seeds" counts both
        versus = (f"{CLASS_NAMES[anomaly]} (anomaly, {anomaly})" if isinstance(anomaly, int) else
                  "stand-in anomalies " + ", ".join(f"{CLASS_NAMES[c]} ({c})" for c in anomaly))
        title = (f"{CLASS_NAMES[normal]} (normal, {normal}) vs {versus}, seeds {','.join(map(str, seeds))}"
                 + (" - VALIDATION: held-out training images only" if validation else "")
                 + (" - mean over stand-ins and seeds" if len(splits) > 1 else ""))
        few = summarize_few(rows)
        results.append({"normal": normal, "anomaly": anomaly, "rows": rows, "summary": summary,
                        **({"few_anomalies": few} if few else {})})
        sections.append(summary_markdown(summary, title + " - NO ANOMALY SEEN") + (
            "\n" + few_markdown(few, title) if few else ""))
        single = len(pairs) == 1
        write_json(out / "compare.json", {"training": base.to_dict(), "split": split_kind, "limit": limit,
                                          "val_anomalies": list(val_anomalies), "draws": draws,
                                          **(results[0] if single else {"pairs": results})})
        write_text(out / "compare.md", "\n".join(sections))
        print(sections[-1])
    return sections


def _read_compare_json(run_dir) -> dict:
    import json

    path = Path(run_dir) / "compare.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--reuse {run_dir}: {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--reuse {run_dir}: {path} is not valid JSON ({error})") from None
