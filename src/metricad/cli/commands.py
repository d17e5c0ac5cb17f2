"""What each command does: build the options into calls of the modules that do the work (imported on use)."""

from __future__ import annotations

import sys
from dataclasses import replace

from metricad.data.fashion_mnist import CLASS_NAMES
from metricad.data.sources import FashionMNIST, ImageFolders
from metricad.recipe import FOLDER_PRESET, PRESETS, PRETRAINED

FASHION_MNIST = (7, 9)  # the built-in experiment's (normal, anomaly) classes: sneaker vs ankle boot
FASHION_MNIST_OPTIONS = ("normal", "anomaly", "limit", "data_dir", "val_anomalies", "val_seed")
FOLDER_OPTIONS = ("reference_dir", "val_dir", "image_size", "channels", "tile", "tile_overlap", "skip_bad_files")
# What only a recipe that trains uses: refused when it trains nothing (epochs 0), rather than silently dropped.
TRAINING_OPTIONS = ("loss", "labels", "batch_size", "lr", "lr_schedule", "ensemble", "negatives", "defects")


def refuse_unused(args, names, why: str) -> None:
    """An option the user gave that this command would not use is an error naming it, never silently dropped."""
    given = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name, None) not in (None, False, [])]
    if given:
        raise ValueError(f"{', '.join(given)}: {why}")


def training_config(args):
    """The recipe the training options describe: the preset with the options given."""
    overrides = {name: getattr(args, name) for name in TRAINING_OPTIONS + ("epochs", "seed", "holdout")}
    preset = args.preset or (FOLDER_PRESET if getattr(args, "normal_dir", None) else "default")
    config = replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    if config.epochs == 0:
        refuse_unused(args, TRAINING_OPTIONS, f"the {preset} recipe trains nothing (epochs 0: a pretrained backbone "
                      "as it is), so these would go unused: pass --preset default (or --epochs N) to train")
    config = with_backbone(config, args.model, getattr(args, "backbone_weights", None))
    from metricad.train.config import scored

    config = scored(config, args.score)
    return config if args.normalize is None else config.with_options({"model_kwargs": {"normalize": args.normalize}})


def detector_params(args) -> dict:
    """The detector options of ``train`` and ``reproduce``: its index, a coreset of anchors, the patch bank's size."""
    for name in ("coreset", "bank_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    params = {"index": args.index} if args.index else {}
    if args.coreset:
        params |= {"n_anchors": args.coreset, "anchor_sampling": "coreset"}
    if args.bank_size is not None:
        params["bank_size"] = args.bank_size
    return params


def data_source(args):
    """Where the training images come from: image folders (``--normal-dir``) or Fashion-MNIST; an option of the
    other source is refused by name."""
    if args.normal_dir:
        refuse_unused(args, FASHION_MNIST_OPTIONS, "Fashion-MNIST options, not used with --normal-dir")
        return ImageFolders(args.normal_dir, args.reference_dir, args.val_dir, args.image_size, args.channels,
                            args.holdout, args.skip_bad_files, tile=args.tile, tile_overlap=args.tile_overlap or 0)
    refuse_unused(args, FOLDER_OPTIONS, "options for image folders: pass --normal-dir (Fashion-MNIST's images are "
                  "28x28 and come with their own reference classes)")
    normal, anomaly = _classes(args)
    return FashionMNIST(normal, anomaly, args.limit, args.data_dir, args.val_anomalies or 0, args.val_seed or 0)


def _classes(args) -> tuple[int, int]:
    return (FASHION_MNIST[0] if args.normal is None else args.normal,
            FASHION_MNIST[1] if args.anomaly is None else args.anomaly)


def with_backbone(config, name: str | None, weights: str | None):
    """``config`` on the network ``name`` (a registered model, else a timm architecture) starting from
    ``weights`` (a file; for efficientnet-lite0 the packaged ImageNet weights by default)."""
    if name is None and weights is None:
        return config
    name = name or config.model
    kwargs = {k: v for k, v in config.model_kwargs.items() if k not in ("weights", "arch")}
    from metricad.models import list_models

    if name not in list_models():  # a timm architecture by its own name
        if weights is None:
            raise ValueError(f"--backbone {name}: not one of {', '.join(list_models())}; a timm architecture needs "
                             "its weights file, --backbone-weights FILE (nothing is downloaded)")
        name, kwargs = "timm", kwargs | {"arch": name}
    if name in PRETRAINED:
        kwargs["weights"] = weights or ("imagenet" if name != "timm" else None)  # timm: --backbone-weights
    elif weights is not None:
        raise ValueError(f"--backbone-weights is for a pretrained backbone ({', '.join(PRETRAINED)} or a timm "
                         f"architecture), not {name}")
    return replace(config, model=name, model_kwargs=kwargs)


def cmd_train(args) -> None:
    from metricad import distributed

    clean = False
    try:
        path = _train(args)
        clean = True
    finally:  # under torchrun: every rank leaves the process group before it exits, also after an error
        distributed.shutdown(clean)
    if distributed.launch_rank() == 0:  # under torchrun, one line for the job
        print(path)


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads for this job. With the seed, they decide the float32 sums' order, and so
    the exact weights (README, "Repeatable results"); the run records the count it trained with."""
    if threads is not None:
        import torch

        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def _train(args):
    from metricad import distributed
    from metricad.thresholds import refuse_unused_options, threshold_request
    from metricad.train import pipeline
    from metricad.train.config import checked

    set_threads(getattr(args, "threads", None))
    if args.resume:
        kept = [name for name, value in vars(args).items() if name not in ("command", "func", "resume", "device",
                                                                           "data_dir")]
        refuse_unused(args, kept, f"--resume continues {args.resume} with the options it was started with; only "
                      "--device and --data-dir may be given")
        return pipeline.resume_run(args.resume, device=args.device, data_dir=args.data_dir)
    if not args.out:
        raise ValueError("train needs --out RUN (or --resume RUN to continue an interrupted run)")
    config = checked(training_config(args))  # a recipe that cannot train is refused before anything is loaded
    source = data_source(args)
    refuse_unused_options(args.threshold_mode, args.contamination, args.target_fpr)
    threshold = threshold_request(args.threshold_mode, args.contamination, args.target_fpr)
    if distributed.launch_rank() == 0:
        what = (f"{config.model} as it is (pretrained, no training)" if config.epochs == 0 else
                f"training {config.model} x {config.ensemble} with the {config.loss} loss, {config.labels} labels, "
                f"{config.epochs} epochs")
        print(f"{what}; score {config.score}", file=sys.stderr)
    return pipeline.train_run(args.out, config, source, threshold, detector_params(args), args.device,
                              args.overwrite)


def _refuse_unused_test_options(args) -> None:
    """``evaluate`` and ``report``: the run's own test split (``--data-dir``) or ``--test-dir``, not both."""
    if args.test_dir:
        refuse_unused(args, ("data_dir",), "--test-dir gives the test images (--data-dir finds the run's own)")
    else:
        refuse_unused(args, ("skip_bad_files",), "for --test-dir's images")


def cmd_evaluate(args) -> None:
    from metricad.evaluate.evaluation import evaluate_run

    _refuse_unused_test_options(args)
    if args.anchors is None:
        refuse_unused(args, ("anchor_sampling", "anchor_seed"), "these choose which --anchors N of the stored "
                      "anchors score: pass --anchors N")

    _, _, metrics, _ = evaluate_run(args.run, args.data_dir, args.device, args.runtime, args.test_dir,
                                    args.skip_bad_files, args.mask_dir, score=args.score, k=args.k,
                                    n_anchors=args.anchors, anchor_sampling=args.anchor_sampling,
                                    random_state=args.anchor_seed)
    at = metrics["at_threshold"]
    print(f"AUC {metrics['auc']:.4f}  (average precision {metrics['average_precision']:.4f}, "
          f"{metrics['n_anchors']} anchors, k={metrics['k']}, score {metrics['score']})")
    print(f"at the threshold {metrics['threshold']:.4f}: precision {at['precision']:.3f}  recall {at['recall']:.3f}  "
          f"F1 {at['f1']:.3f}  false-positive rate {at['false_positive_rate']:.3f}")
    if "pixel_auroc" in metrics:
        pixel = metrics["pixel_at_threshold"]
        print(f"pixel AUC {metrics['pixel_auroc']:.4f}  AUPRO {metrics['aupro']:.4f} (to FPR "
              f"{metrics['aupro_fpr_limit']}; {metrics['n_defect_regions']} defect regions)")
        for what, key in (("AUC", "auc_by_type"), ("pixel AUC", "pixel_auroc_by_type"), ("AUPRO", "aupro_by_type")):
            print(f"{what} by type: " + ", ".join(f"{kind} {value:.4f}" for kind, value in metrics[key].items()))
        print(f"defect masks at the thresholds: pixel precision {pixel['precision']:.3f}  recall "
              f"{pixel['recall']:.3f}  F1 {pixel['f1']:.3f}  IoU {pixel['iou']:.3f}")


def _refuse_unused_score_options(args) -> None:
    from metricad.deploy.scorer import is_bundle

    if is_bundle(args.target):
        refuse_unused(args, ("runtime",), "a model bundle always runs on ONNX Runtime")
    if args.engine != "ray":
        refuse_unused(args, ("ray_address", "actors"), "for the Ray engine: pass --engine ray (with --out)")
    if not args.maps:
        refuse_unused(args, ("map_format",), "the format of the map files --maps DIR writes")
    if not args.out:
        refuse_unused(args, ("chunk_size", "engine"), "for the Parquet output: pass --out DIR")


def cmd_score(args) -> None:
    _refuse_unused_score_options(args)
    if args.out:
        from metricad.deploy.batch import score_to_parquet

        if args.maps:
            raise ValueError("--maps writes map files beside a CSV; with --out, --boxes puts the defect regions in "
                             "the Parquet rows")
        chunk_size = 1024 if args.chunk_size is None else args.chunk_size
        summary = score_to_parquet(args.target, args.files, args.out, chunk_size,
                                   args.engine or "local", args.device, args.runtime or "onnx", args.ray_address,
                                   args.actors, args.boxes)
        print(f"{summary['out']}: {summary['scored']} image(s) scored, {summary['already_scored']} already there "
              f"({summary['images']} in all)")
        return
    from metricad.data import load_images
    from metricad.data.images import list_image_files
    from metricad.deploy.scorer import load_scorer

    if args.boxes:
        raise ValueError("--boxes is for the Parquet output (--out); with a CSV, --maps DIR writes the maps")
    batch = len(args.files) == 1 and args.files[0].lower().endswith(".npy")
    files = args.files if batch else list_image_files(args.files)  # folders, globs and lists, as with --out
    scorer = load_scorer(args.target, args.device, args.runtime or "torch")
    if args.maps:
        return _score_with_maps(scorer, files, args)
    channels, size = scorer.input_spec
    names, images = load_images(files, size, channels)
    scores = scorer.score_samples(images)
    labels = scorer.predict_scores(scores)
    normalized = scorer.normalized_score(scores)
    print("path,score,label" + (",normalized_score" if args.normalized else ""))
    for i, name in enumerate(names):
        print(f"{name},{scores[i]:.6f},{'anomaly' if labels[i] else 'normal'}"
              + (f",{normalized[i]:.6f}" if args.normalized else ""))


def _score_with_maps(scorer, files, args) -> None:
    from metricad.deploy.map_files import write_maps

    print("path,score,label" + (",normalized_score" if args.normalized else "") + ",defect_pixels,map,overlay")
    for located, map_path, overlay_path in write_maps(scorer, files, args.maps, args.map_format or "png"):
        normalized = f",{scorer.normalized_score([located.score])[0]:.6f}" if args.normalized else ""
        print(f"{located.name},{located.score:.6f},{'anomaly' if located.is_anomaly else 'normal'}{normalized},"
              f"{int(located.mask.sum())},{map_path},{overlay_path}")


def cmd_benchmark(args) -> None:
    from metricad.evaluate.evaluation import benchmark_run

    print(benchmark_run(args.run, args.anchors, args.batch_sizes, args.data_dir, args.device, args.runtime))


def cmd_export_dataset(args) -> None:
    if args.dataset == "elpv":
        refuse_unused(args, ("normal", "anomaly", "data_dir"), "Fashion-MNIST options, not used with --dataset elpv "
                      "(its images come from the elpv-dataset package)")
        from metricad.data.elpv import export_elpv

        counts = export_elpv(args.out)
        for kind, parts in counts.items():
            print(f"{args.out}/{kind}: " + ", ".join(f"{part}/ {n}" for part, n in parts.items()))
            print(f"  train on it: metricad train --out RUN --normal-dir {args.out}/{kind}/train/good   then: "
                  f"metricad evaluate RUN --test-dir {args.out}/{kind}/test")
        return
    from metricad.data import load_fashion_mnist
    from metricad.data.folders import export_split_to_folders

    train, test = load_fashion_mnist(args.data_dir)
    normal, anomaly = _classes(args)
    out = export_split_to_folders(args.out, train, test, normal, anomaly, CLASS_NAMES)
    print(f"{out}: normal/, reference/<class>/, test/good/, test/<anomaly class>/ (PNG)")
    print(f"train on it: metricad train --out RUN --normal-dir {out}/normal --reference-dir {out}/reference "
          f"--holdout 0   then: metricad evaluate RUN --test-dir {out}/test")


def cmd_make_defects(args) -> None:
    from metricad.data.defect_folders import write_defect_test_set

    counts = write_defect_test_set(args.good_dir, args.out, args.defects, args.seed)
    folders = ", ".join(f"{kind}/ {n}" for kind, n in counts.items())
    print(f"{args.out}/test: {folders}; masks in {args.out}/masks")
    print(f"  check a run on it: metricad evaluate RUN --test-dir {args.out}/test --mask-dir {args.out}/masks")


def cmd_explain(args) -> None:
    from metricad.evaluate.explain import explain_files

    print("\n".join(explain_files(args.run, args.files, args.out, args.method, args.device)))


def cmd_report(args) -> None:
    from metricad.evaluate.report import report_run

    _refuse_unused_test_options(args)
    out, metrics = report_run(args.run, args.test_dir, args.out, args.data_dir, args.device, args.skip_bad_files,
                              args.mask_dir)
    pixel = f", pixel AUC {metrics['pixel_auroc']:.4f}, AUPRO {metrics['aupro']:.4f}" if "aupro" in metrics else ""
    print(f"{out}  (AUC {metrics['auc']:.4f}, F1 at the threshold {metrics['at_threshold']['f1']:.3f}{pixel})")


def cmd_compare(args) -> None:
    from metricad.compare.comparison import run_comparison

    overrides = dict(args.set or []) | ({"epochs": args.epochs} if args.epochs is not None else {})
    if args.pairs:
        refuse_unused(args, ("normal", "anomaly"), "--pairs names every (normal, anomaly) pair already")
    if not args.val_anomalies:
        refuse_unused(args, ("draws",), "draws of the few-anomaly protocol: pass --val-anomalies K")
    run_comparison(args.out, args.pairs or [_classes(args)], args.methods, args.seeds,
                   PRESETS["default"].with_options(overrides), args.validation, args.limit, args.reuse or [],
                   args.data_dir, args.device, args.val_anomalies or [], 3 if args.draws is None else args.draws)


def cmd_reproduce(args) -> None:
    from metricad.compare.reproduce import reproduce

    set_threads(args.threads)
    print("\n".join(reproduce(args.out, training_config(args), *_classes(args), args.limit, args.data_dir,
                              args.device, args.overwrite, args.val_anomalies or 0, args.val_seed or 0,
                              detector_params(args))))
