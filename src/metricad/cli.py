"""The ``metricad`` command line: train, evaluate, score, explain, report, serve, benchmark, export, compare,
export-dataset, reproduce."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from metricad.compare import METHODS
from metricad.data import CLASS_NAMES, DataNotFoundError, load_images
from metricad.data.negatives import SHIFTS
from metricad.detector import Detector, read_config
from metricad.files import write_json, write_text
from metricad.losses import LOSSES, LOSSES_WITH_CENTRES
from metricad.models import list_models
from metricad.runtime import RUNTIMES
from metricad.scores import SCORES
from metricad.thresholds import THRESHOLD_MODES
from metricad.training import PRESETS

ORIGINAL_ANCHOR_COUNTS = [6000, 3000, 1000, 500, 100, 50]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _choice_list(choices, what: str):
    """An argparse type: comma-separated names, each one of ``choices``."""
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values or any(v not in choices for v in values):
            raise argparse.ArgumentTypeError(f"{what} must be among {', '.join(choices)}, got {text!r}")
        return values
    return parse


def _negatives(text: str) -> list[str]:
    """``--negatives``: comma-separated transforms of metricad.data.negatives, or ``none``."""
    if text.strip() == "none":
        return []
    return _choice_list(SHIFTS, "negative transforms (or none)")(text)


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="starting configuration; the options below override it (seed = the original recipe)")
    p.add_argument("--normal", type=int, default=7, help="normal class (default 7, sneaker)")
    p.add_argument("--anomaly", type=int, default=9, help="anomaly class, never trained on (default 9, ankle boot)")
    p.add_argument("--model", choices=list_models())
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--labels", choices=("fine", "binary"),
                   help="fine: each reference class keeps its label; binary: normal vs everything else")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-schedule", choices=("step", "onecycle"),
                   help="onecycle: warm-up, then cosine to ~0 (default); step: x0.1 at fixed epochs (the original)")
    p.add_argument("--negatives", type=_negatives, metavar="T1,T2|none",
                   help=f"transforms of the normal images trained as classes of their own ({', '.join(SHIFTS)}); "
                        "none for objects without a fixed orientation")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                   help="unit-length embeddings, k-NN by angle (the default's); --no-normalize keeps their length "
                        "(with --score knn: an earlier default, better on sneaker vs boot; BENCHMARKS.md 2d)")
    p.add_argument("--score", choices=SCORES,
                   help="knn+excess-margin: the k-NN distance plus the class margin of a cosface/arcface loss "
                        "where it exceeds the anchors' (the default's); knn+margin: plus the whole margin; knn: "
                        "the k-NN distance alone (the default for other losses)")
    p.add_argument("--seed", type=int)
    p.add_argument("--limit", type=int, help="at most this many training images per class (quick runs)")
    p.add_argument("--data-dir", help="directory with the four Fashion-MNIST .gz files")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")


def _image_size(text: str) -> tuple[int, int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 4:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHT,WIDTH (pixels, at least 4), got {text!r}")
    return (values[0], values[-1])


def _add_folder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your own images (instead of Fashion-MNIST)")
    g.add_argument("--normal-dir", help="folder of normal (good) images, searched recursively")
    g.add_argument("--reference-dir", help="folder of reference images; each sub-folder is one class")
    g.add_argument("--val-dir", help="labelled validation images: good/ + anomalous sub-folders (threshold)")
    g.add_argument("--image-size", type=_image_size, help="model input SIZE or HEIGHT,WIDTH (default: the normal "
                   "images' usual size, longer side at most 64)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="1 = grey, 3 = RGB (default: from the images)")
    g.add_argument("--holdout", type=float, help="fraction of normal images kept out to set the threshold on "
                   "(default 0.1, or 0 with --val-dir)")
    g.add_argument("--threshold-mode", choices=THRESHOLD_MODES, default="contamination",
                   help="contamination: a quantile of held-out normal scores; fpr: target false-positive rate "
                        "on --val-dir; f1: best F1 on --val-dir")
    g.add_argument("--contamination", type=float, default=0.01, help="expected anomaly rate (contamination mode)")
    g.add_argument("--target-fpr", type=float, default=0.01, help="false-positive rate to aim for (fpr mode)")
    g.add_argument("--skip-bad-files", action="store_true", help="leave unreadable images out (listed) "
                   "instead of stopping with an error")


def _training_config(args):
    overrides = {"model": args.model, "loss": args.loss, "labels": args.labels, "epochs": args.epochs,
                 "batch_size": args.batch_size, "lr": args.lr, "lr_schedule": args.lr_schedule,
                 "negatives": args.negatives, "seed": args.seed}
    config = replace(PRESETS[args.preset], **{k: v for k, v in overrides.items() if v is not None})
    # A loss without class centres (--loss semi-hard) has no margin to add: it scores by k-NN unless told otherwise.
    score = args.score or (config.score if config.loss in LOSSES_WITH_CENTRES else "knn")
    config = replace(config, score=score)
    return config if args.normalize is None else config.with_options({"model_kwargs": {"normalize": args.normalize}})


def _train(args) -> Path:
    from metricad.runs import train_run

    config = _training_config(args)
    if getattr(args, "normal_dir", None):  # reproduce has no folder options
        from metricad.runs import train_folder_run

        print(f"training {config.model} with the {config.loss} loss on {args.normal_dir} (normal) and "
              f"{args.reference_dir} (reference)", file=sys.stderr)
        threshold = {"mode": args.threshold_mode, "contamination": args.contamination,
                     "target_fpr": args.target_fpr}  # Detector.calibrate uses and records what the mode needs
        return train_folder_run(args.out, config, args.normal_dir, args.reference_dir, args.val_dir,
                                args.image_size, args.channels, args.holdout, args.skip_bad_files, threshold,
                                args.device, args.overwrite)
    print(f"training {config.model} with the {config.loss} loss, {config.labels} labels, {config.epochs} epochs; "
          f"normal = {args.normal} ({CLASS_NAMES[args.normal]}), anomaly = {args.anomaly} "
          f"({CLASS_NAMES[args.anomaly]})", file=sys.stderr)
    return train_run(args.out, config, args.normal, args.anomaly, args.limit, args.data_dir, args.device,
                     overwrite=args.overwrite)


def cmd_train(args) -> None:
    if args.resume:
        from metricad.runs import resume_run

        print(resume_run(args.resume, device=args.device, data_dir=args.data_dir))
        return
    if not args.out:
        raise ValueError("train needs --out RUN (or --resume RUN to continue an interrupted run)")
    print(_train(args))


def _test_split(run: Path, detector: Detector, test_dir=None, data_dir=None, skip_bad_files=False):
    """The run's own test split, or ``test_dir`` at the model's input spec; it must hold both kinds of image."""
    from metricad.runs import run_split, test_dir_split

    split = test_dir_split(test_dir, *detector.input_spec, skip_bad_files) if test_dir else run_split(run, data_dir)
    if len(np.unique(split.test_is_anomaly)) < 2:
        raise ValueError(f"{run}: the test images need both normal and anomalous ones to compute an AUC "
                         "(pass --test-dir with good/ and anomalous sub-folders)")
    return split


def _evaluate(run: Path, data_dir=None, n_anchors=None, k=None, device=None, runtime="torch", anchor_sampling=None,
              random_state=None, test_dir=None, skip_bad_files=False, score=None):
    from metricad.evaluation import evaluate
    from metricad.runs import update_json

    detector = Detector.load(run, device=device, runtime=runtime, n_anchors=n_anchors, k=k,
                             anchor_sampling=anchor_sampling, random_state=random_state, score=score)
    split = _test_split(run, detector, test_dir, data_dir, skip_bad_files)
    metrics, scores = evaluate(detector, split.test_images, split.test_is_anomaly)
    if test_dir:
        metrics["test_dir"] = str(test_dir)
    update_json(run / "metrics.json", metrics)
    return detector, split, metrics, scores


def cmd_evaluate(args) -> None:
    _, _, metrics, _ = _evaluate(Path(args.run), args.data_dir, args.anchors, args.k, args.device, args.runtime,
                                 args.anchor_sampling, args.anchor_seed, args.test_dir, args.skip_bad_files,
                                 args.score)
    at = metrics["at_threshold"]
    print(f"AUC {metrics['auc']:.4f}  (average precision {metrics['average_precision']:.4f}, "
          f"{metrics['n_anchors']} anchors, k={metrics['k']}, score {metrics['score']})")
    print(f"at the threshold {metrics['threshold']:.4f}: precision {at['precision']:.3f}  recall {at['recall']:.3f}  "
          f"F1 {at['f1']:.3f}  false-positive rate {at['false_positive_rate']:.3f}")


def cmd_score(args) -> None:
    detector = Detector.load(args.run, device=args.device, runtime=args.runtime)
    channels, size = detector.input_spec
    names, images = load_images(args.files, size, channels)
    scores = detector.score_samples(images)
    labels = np.where(scores > detector.offset_, "anomaly", "normal")
    normalized = detector.normalized_score(scores) if args.normalized else None
    print("path,score,label" + (",normalized_score" if args.normalized else ""))
    for i, (name, score, label) in enumerate(zip(names, scores, labels)):
        print(f"{name},{score:.6f},{label}" + (f",{normalized[i]:.6f}" if args.normalized else ""))


def _benchmark(run: Path, anchor_counts, batch_sizes, data_dir=None, device=None, runtimes=("torch",)) -> str:
    from metricad.evaluation import benchmark, benchmark_markdown
    from metricad.runs import run_split

    split = run_split(run, data_dir)
    model_name = read_config(run)["model"]["name"]

    def show(row):
        print(f"  {row['runtime']:>5}  batch {row['batch_size']:>4}  anchors {row['anchors']:>5}  "
              f"AUC {row['auc']:.4f}  {row['ms_per_image']:.3f} ms/image", file=sys.stderr)

    rows = []
    for runtime in runtimes:
        detector = Detector.load(run, device=device, runtime=runtime)
        available = len(detector.anchor_images_)
        too_many = [n for n in anchor_counts if n > available]
        if too_many:
            raise ValueError(f"--anchors {too_many} exceed the {available} anchors stored in {run}")
        rows += benchmark(detector, split.test_images, split.test_is_anomaly, anchor_counts, batch_sizes, model_name,
                          runtime=runtime, progress=show)
    markdown = benchmark_markdown(rows, len(split.test_images))
    write_json(run / "benchmark.json", rows)
    write_text(run / "benchmark.md", markdown)
    return markdown


def cmd_benchmark(args) -> None:
    print(_benchmark(Path(args.run), args.anchors, args.batch_sizes, args.data_dir, args.device, args.runtime))


def cmd_export(args) -> None:
    from metricad.runtime import export_onnx

    detector = Detector.load(args.run, device="cpu")
    out = Path(args.out) if args.out else Path(args.run) / "model.onnx"
    export_onnx(detector.model, out)
    channels, (height, width) = detector.input_spec
    print(f"{out}: input 'images' float32 (N, {channels}, {height}, {width}) in [0, 1], "
          f"output 'embeddings' (N, {detector.model.embedding_dim})")


def cmd_export_dataset(args) -> None:
    from metricad.data import load_fashion_mnist
    from metricad.data.folders import export_split_to_folders

    train, test = load_fashion_mnist(args.data_dir)
    out = export_split_to_folders(args.out, train, test, args.normal, args.anomaly, CLASS_NAMES)
    print(f"{out}: normal/, reference/<class>/, test/good/, test/<anomaly class>/ (PNG)")
    print(f"train on it: metricad train --out RUN --normal-dir {out}/normal --reference-dir {out}/reference "
          f"--holdout 0   then: metricad evaluate RUN --test-dir {out}/test")


def cmd_explain(args) -> None:
    import matplotlib.pyplot as plt

    from metricad.explain import explanation_figure
    from metricad.files import atomic_write

    detector = Detector.load(args.run, device=args.device)
    channels, size = detector.input_spec
    names, images = load_images(args.files, size, channels)
    explanation = detector.explain(images, method=args.method)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["path,score,label,nearest_anchor,figure"]
    for i, name in enumerate(names):
        figure = out / f"{i:04d}-{Path(name.split('[')[0]).stem}.png"
        fig = explanation_figure(images[i], explanation.heatmaps[i],
                                 detector.anchor_images_[explanation.nearest_anchor[i]], explanation.scores[i],
                                 detector.offset_, Path(name).name)
        atomic_write(figure, lambda p, fig=fig: fig.savefig(p, format="png", dpi=110))
        plt.close(fig)
        label = "anomaly" if explanation.scores[i] > detector.offset_ else "normal"
        lines.append(f"{name},{explanation.scores[i]:.6f},{label},{int(explanation.nearest_anchor[i])},{figure}")
    write_text(out / "explanations.csv", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _write_report(run: Path, detector: Detector, split, test_set: str, out: Path) -> tuple[Path, dict]:
    from metricad.report import build_report, write_report

    config = read_config(run)
    details = {"run": str(run), "model": config["model"]["name"],
               "training": ", ".join(f"{k} {config.get('training', {}).get(k)}" for k in ("loss", "labels", "epochs")),
               "anchors": detector.index_.ntotal, "test set": test_set}
    page, metrics = build_report(detector, split.test_images, split.test_is_anomaly, f"metricad report: {run.name}",
                                 details)
    return write_report(out, page), metrics


def cmd_report(args) -> None:
    run = Path(args.run)
    detector = Detector.load(run, device=args.device)
    split = _test_split(run, detector, args.test_dir, args.data_dir, args.skip_bad_files)
    out, metrics = _write_report(run, detector, split, args.test_dir or "the run's test split",
                                 Path(args.out) if args.out else run / "report.html")
    print(f"{out}  (AUC {metrics['auc']:.4f}, F1 at the threshold {metrics['at_threshold']['f1']:.3f})")


def _baseline_aucs(split) -> dict:
    from sklearn.metrics import roc_auc_score

    from metricad.baselines import BASELINES

    results = {}
    for name, method in BASELINES.items():
        start = time.perf_counter()
        scores = method().fit(split.anchor_images).score_samples(split.test_images)
        results[name] = {"auc": float(roc_auc_score(split.test_is_anomaly, scores)),
                         "seconds": time.perf_counter() - start}
    return results


def cmd_reproduce(args) -> None:
    from metricad.evaluation import plot_extremes
    from metricad.runs import update_json

    start = time.perf_counter()
    run = _train(args)
    detector, split, metrics, scores = _evaluate(run, args.data_dir, device=args.device)
    anchor_counts = [n for n in ORIGINAL_ANCHOR_COUNTS if n <= len(split.anchor_images)]
    markdown = _benchmark(run, anchor_counts, [1, 20], args.data_dir, args.device, RUNTIMES)
    plot_extremes(split.test_images, split.test_is_anomaly, scores, run / "figure.png")
    report, _ = _write_report(run, detector, split, "the run's test split", run / "report.html")
    baselines = _baseline_aucs(split)
    update_json(run / "metrics.json", {"baselines": baselines})
    config = read_config(run)
    print(markdown)
    print("Same split, raw-pixel baselines fitted on the normal training images:")
    for name, result in baselines.items():
        print(f"  {name:<12} AUC {result['auc']:.4f}  ({result['seconds']:.1f} s)")
    print(f"run directory: {run}")
    print(f"model {config['model']['name']}, loss {config['training']['loss']}, labels {config['training']['labels']},"
          f" {config['training']['epochs']} epochs in {config['training_seconds']:.0f} s")
    print(f"metricad AUC {CLASS_NAMES[args.normal]} (normal) vs {CLASS_NAMES[args.anomaly]} (anomaly): "
          f"{metrics['auc']:.4f}   (original post, sneaker vs ankle boot: 0.9066)")
    print(f"figure: {run / 'figure.png'}   report: {report}   total wall time {time.perf_counter() - start:.0f} s")


def cmd_serve(args) -> None:
    try:
        from metricad.serve import ServiceLimits
        from metricad.serve.app import serve
    except ImportError as exc:
        raise ValueError(f"metricad serve needs the 'serve' extra: pip install 'metricad[serve]' ({exc})") from exc

    run = Path(args.run)
    read_config(run)  # a clear error now rather than an unhealthy server
    limits = ServiceLimits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                           max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_files=args.max_files,
                           max_pixels=args.max_pixels)
    print(f"serving {run} on http://{args.host}:{args.port} (POST /score, GET /health, GET /info, /docs); "
          f"batches of up to {args.max_batch}, waiting at most {args.max_wait_ms} ms", file=sys.stderr)
    serve(run, args.host, args.port, limits, args.device, args.runtime, args.threads)


def _integers(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _pair_list(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(v) for v in item.split(":")) for item in text.split(",") if item.strip()]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected NORMAL:ANOMALY pairs such as 7:9,0:6, got {text!r}")
    return pairs


def _setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` for a training option; VALUE is read as JSON (numbers, lists), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. epochs=5), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _read_compare_json(run_dir: str) -> dict:
    path = Path(run_dir) / "compare.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--reuse {run_dir}: {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--reuse {run_dir}: {path} is not valid JSON ({error})") from None


def cmd_compare(args) -> None:
    from metricad import compare
    from metricad.runs import load_split

    overrides = dict(args.set or []) | ({"epochs": args.epochs} if args.epochs else {})
    base = PRESETS["default"].with_options(overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def show(row):
        print(f"  {row['normal']}/{row['anomaly']}  seed {row['seed']}  {row['method']:<12} AUC {row['auc']:.4f}  "
              + (f"reused from {row['reused_from']}" if "reused_from" in row else
                 f"trained in {row['train_seconds']:.0f} s"), file=sys.stderr)

    # The validation splits depend on the first seed: it is part of what a reused row must have been measured on.
    split_kind = {"stand_ins": args.validation, "seed": args.seeds[0]} if args.validation else "test"
    reuse = {}
    for earlier in args.reuse or []:
        reuse |= compare.reusable_rows(_read_compare_json(earlier), str(Path(earlier) / "compare.json"), base,
                                       split_kind, args.limit)
    results, sections = [], []
    for normal, anomaly in args.pairs or [(args.normal, args.anomaly)]:
        split = load_split({"normal": normal, "anomaly": anomaly, "limit": args.limit}, args.data_dir)
        if args.validation:  # never the test images nor the anomaly: for choosing settings
            from metricad.data import validation_split

            splits = [validation_split(split, c, seed=args.seeds[0]) for c in args.validation]
            anomaly = args.validation[0] if len(args.validation) == 1 else args.validation
        else:
            splits = [split]
        rows = [row for s in splits
                for row in compare.compare(s, args.methods, args.seeds, base, args.device, progress=show,
                                           reuse=reuse)]
        summary = compare.summarize(rows)  # with several stand-ins, over all of them: "seeds" counts both
        versus = (f"{CLASS_NAMES[anomaly]} (anomaly, {anomaly})" if isinstance(anomaly, int) else
                  "stand-in anomalies " + ", ".join(f"{CLASS_NAMES[c]} ({c})" for c in anomaly))
        title = (f"{CLASS_NAMES[normal]} (normal, {normal}) vs {versus}, seeds {','.join(map(str, args.seeds))}"
                 + (" - VALIDATION: held-out training images only" if args.validation else "")
                 + (" - mean over stand-ins and seeds" if len(splits) > 1 else ""))
        results.append({"normal": normal, "anomaly": anomaly, "rows": rows, "summary": summary})
        sections.append(compare.summary_markdown(summary, title))
        # Written after every pair: a long comparison keeps what it has measured.
        single = len(results) == 1 and not args.pairs
        write_json(out / "compare.json", {"training": base.to_dict(), "split": split_kind, "limit": args.limit,
                                          **({"rows": rows, "summary": summary} if single else {"pairs": results})})
        write_text(out / "compare.md", "\n".join(sections))
        print(sections[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metricad", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an embedding and fit its anchors into a run directory")
    p.add_argument("--out", help="run directory to create")
    _add_folder_args(p)
    p.add_argument("--resume", metavar="RUN", help="continue the interrupted training of RUN from its last "
                   "checkpoint (the options it was started with are kept; --device and --data-dir may change)")
    _add_training_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="ROC AUC and metrics at the threshold on the run's test split or --test-dir; "
                       "writes RUN/metrics.json")
    p.add_argument("run")
    p.add_argument("--anchors", type=int, help="use N of the stored anchors (the first N unless --anchor-sampling)")
    p.add_argument("--anchor-sampling", choices=("first", "random"), help="which N anchors: first (default) or random")
    p.add_argument("--anchor-seed", type=int, help="seed of the random anchor subset")
    p.add_argument("--k", type=int, help="score = mean distance to the k nearest anchors")
    p.add_argument("--score", choices=SCORES, help="score the run's model and anchors another way (no training; "
                   "the threshold is recomputed); a margin score needs a run trained with class centres")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch")
    p.add_argument("--test-dir", help="evaluate on your images: good/ + anomalous sub-folders")
    p.add_argument("--skip-bad-files", action="store_true", help="leave unreadable test images out (listed)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="score image files (PNG/JPEG) or one .npy batch; prints CSV path,score,label")
    p.add_argument("run")
    p.add_argument("files", nargs="+")
    p.add_argument("--normalized", action="store_true",
                   help="add a column score / (score + threshold): 0.5 at the threshold, in [0, 1)")
    p.add_argument("--device")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("benchmark", help="the original's speed tables: anchors x batch size, k-NN included")
    p.add_argument("run")
    p.add_argument("--anchors", type=_int_list, default=ORIGINAL_ANCHOR_COUNTS)
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 20])
    p.add_argument("--runtime", type=_choice_list(RUNTIMES, "runtimes"), default=["torch"],
                   help="comma-separated: torch,onnx")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("export", help="export the run's embedding model (ONNX) for deployment")
    p.add_argument("run")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", help="output file (default RUN/model.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("explain", help="heat-maps of where images differ from normal, beside their nearest anchor")
    p.add_argument("run")
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True, help="directory for one figure per image and explanations.csv")
    p.add_argument("--method", choices=("feature-diff", "gradcam"), default="feature-diff")
    p.add_argument("--device")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("report", help="one self-contained HTML page: ROC, histograms, confusion matrix, examples")
    p.add_argument("run")
    p.add_argument("--test-dir", help="your test images: good/ + anomalous sub-folders (default: the run's split)")
    p.add_argument("--out", help="HTML file (default RUN/report.html)")
    p.add_argument("--skip-bad-files", action="store_true")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export-dataset", help="write a Fashion-MNIST split as PNG folders (normal/, reference/, test/)")
    p.add_argument("--out", required=True)
    p.add_argument("--normal", type=int, default=7)
    p.add_argument("--anomaly", type=int, default=9)
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_export_dataset)

    p = sub.add_parser("compare", help="every method (baselines included) on one split: AUC over seeds, speed")
    p.add_argument("--out", required=True, help="directory for compare.md and compare.json")
    p.add_argument("--normal", type=int, default=7)
    p.add_argument("--anomaly", type=int, default=9)
    p.add_argument("--pairs", type=_pair_list, help="several splits in one table file, e.g. 7:9,0:6,2:4 "
                   "(instead of --normal/--anomaly)")
    p.add_argument("--methods", type=_choice_list(METHODS, "methods"), default=list(METHODS))
    p.add_argument("--validation", type=_integers, metavar="CLASS[,CLASS...]", help="compare on a validation "
                   "split instead: 10 %% of the normal training images against reference class CLASS, both left "
                   "out of training (to choose settings without the test images or the anomalous class); with "
                   "several classes, one run per class and one table over all of them")
    p.add_argument("--seeds", type=_integers, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, help="training epochs of every trained method (default: the default's)")
    p.add_argument("--set", type=_setting, action="append", metavar="KEY=VALUE",
                   help="change a training option of every trained method, e.g. --set lr_schedule=step "
                   "--set lr_milestones=[4] (repeatable; the options are TrainConfig's fields)")
    p.add_argument("--limit", type=int, help="at most this many training images per class")
    p.add_argument("--reuse", action="append", metavar="DIR", help="take the rows an earlier compare in DIR "
                   "measured with the same split and training configuration instead of refitting (repeatable)")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("serve", help="HTTP scoring service with micro-batching (POST /score, GET /health, /info)")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32, help="score up to this many queued images at once")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="wait at most this long for a batch to fill")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="reject larger request bodies (413)")
    p.add_argument("--max-files", type=int, default=64, help="reject requests with more image files (413)")
    p.add_argument("--max-pixels", type=int, default=16_000_000, help="reject images announcing more pixels (413)")
    p.add_argument("--threads", type=int, help="torch threads for scoring (default: all cores with batching; "
                   "all but one, which HTTP handling needs, with --max-batch 1)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch")
    p.add_argument("--device")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("reproduce", help="train the default on sneaker vs boot, evaluate, benchmark, draw the figure")
    p.add_argument("--out", required=True)
    _add_training_args(p)
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataNotFoundError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as exc:
        print(f"metricad: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
