"""Run directories: train into one atomically (resumably), and read back the data split a run was trained on.

A run directory holds everything: ``config.json`` (data split, training config, model recipe, detector
parameters), ``weights.safetensors``, ``anchors.safetensors``, ``train.log`` and, once evaluated,
``metrics.json``, ``benchmark.json``/``benchmark.md`` and ``figure.png``.

While training, the run lives in the hidden sibling ``.NAME.partial`` with ``job.json`` (what to train) and
a checkpoint after every epoch; it becomes ``NAME`` by one rename when complete. ``resume_run`` continues a
partial run after a crash or a kill.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import metricad
from metricad.checkpoint import CHECKPOINT_FILE
from metricad.class_margin import ClassMargin
from metricad.data import AnomalySplit, load_fashion_mnist, make_split
from metricad.data.folders import folder_split, infer_input_spec, list_images
from metricad.data.negatives import check_fits, misfits
from metricad.detector import Detector, read_config
from metricad.files import write_json
from metricad.scores import MARGIN_SCORES
from metricad.training import PRESETS, TrainConfig, train_embedding


def load_split(data: dict, data_dir=None) -> AnomalySplit:
    """The split a run's "data" section describes: Fashion-MNIST classes, or image folders."""
    if data.get("dataset") == "folders":
        return folder_split(data)[0]
    train, test = load_fashion_mnist(data_dir)
    return make_split(train, test, data["normal"], data["anomaly"], data.get("limit"), data.get("split_seed", 0))


JOB_FILE = "job.json"


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def train_run(out: str | os.PathLike, config: TrainConfig, normal: int = 7, anomaly: int = 9,
              limit: int | None = None, data_dir=None, device=None, detector_params: dict | None = None,
              overwrite: bool = False, progress: bool = True) -> Path:
    """Train on the Fashion-MNIST split, fit the anchors and write the run directory ``out``.

    Everything is written into ``.OUT.partial`` first, which replaces ``out`` only once complete. If training
    stops after a checkpoint (killed, NaN loss), the partial directory is kept for ``resume_run``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: choose another --out or pass --overwrite")
    job = {"metricad_version": metricad.__version__,
           "data": {"dataset": "fashion-mnist", "normal": normal, "anomaly": anomaly, "limit": limit,
                    "split_seed": config.seed},
           "training": config.to_dict(), "detector": detector_params or {}, "overwrite": overwrite}
    split = load_split(job["data"], data_dir)  # fails early (no data, bad classes) before anything is written
    return _start(out, job, split, device, progress)


def _negatives_for_input(config: TrainConfig, image_size: tuple[int, int]) -> TrainConfig:
    """Quarter turns of a non-square input change its shape: the default's are left out (with a note); asked for
    by name, they are an error before anything is written."""
    turns = misfits(config.negatives, *image_size)
    if not turns:
        return config
    if config.negatives != PRESETS["default"].negatives:
        try:
            check_fits(config.negatives, *image_size)
        except ValueError as error:
            raise ValueError(f"--negatives {error}: pass --image-size N or other --negatives") from None
    kept = [name for name in config.negatives if name not in turns]
    print(f"the model input {image_size[0]}x{image_size[1]} is not square: shifted negatives {kept} only "
          "(--negatives to choose)", file=sys.stderr)
    return replace(config, negatives=kept)


def train_folder_run(out: str | os.PathLike, config: TrainConfig, normal_dir, reference_dir, val_dir=None,
                     image_size: tuple[int, int] | None = None, channels: int | None = None,
                     holdout: float | None = None, skip_bad_files: bool = False, threshold: dict | None = None,
                     device=None, overwrite: bool = False, progress: bool = True) -> Path:
    """Train on image folders (see ``data.folders``) and write the run directory ``out``.

    ``image_size`` / ``channels`` default to what the normal images are (``infer_input_spec``). ``holdout``
    (default 0.1 without ``val_dir``, else 0) keeps that fraction of the normal images out of training and
    anchors to calibrate the threshold on. ``threshold``: ``{"mode": ..., "contamination"/"target_fpr": ...}``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: choose another --out or pass --overwrite")
    threshold = dict(threshold or {"mode": "contamination"})
    if threshold["mode"] in ("f1", "fpr") and not val_dir:
        raise ValueError(f"threshold mode {threshold['mode']!r} needs labelled images: pass --val-dir")
    holdout = (0.0 if val_dir else 0.1) if holdout is None else holdout
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"--holdout must be in [0, 1), got {holdout}")
    if image_size is None or channels is None:
        found_channels, found_size = infer_input_spec(list_images(normal_dir))
        channels, image_size = channels or found_channels, image_size or found_size
    if channels not in (1, 3):
        raise ValueError(f"--channels must be 1 or 3, got {channels}")
    data = {"dataset": "folders", "normal_dir": os.fspath(Path(normal_dir).resolve()),
            "reference_dir": os.fspath(Path(reference_dir).resolve()) if reference_dir else None,
            "val_dir": os.fspath(Path(val_dir).resolve()) if val_dir else None,
            "image_size": list(image_size), "channels": channels, "holdout": holdout, "split_seed": config.seed,
            "skip_bad_files": skip_bad_files}
    config = TrainConfig.from_dict({**config.to_dict(), "model_kwargs": {
        **config.model_kwargs, "input_size": list(image_size), "in_channels": channels}})
    config = _negatives_for_input(config, tuple(image_size))
    split, skipped = folder_split(data)
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s), listed in {out}/skipped_files.json:", file=sys.stderr)
        for path, reason in skipped[:10]:
            print(f"  {path}: {reason}", file=sys.stderr)
    job = {"metricad_version": metricad.__version__, "data": data, "training": config.to_dict(),
           "detector": {}, "threshold": threshold, "overwrite": overwrite, "skipped_files": skipped}
    return _start(out, job, split, device, progress)


def _start(out: Path, job: dict, split: AnomalySplit, device, progress: bool) -> Path:
    work = partial_dir(out)
    if work.exists():
        shutil.rmtree(work)  # a stale partial run: this is a fresh start
    work.mkdir(parents=True)
    write_json(work / JOB_FILE, job)
    return _train_in(work, out, job, split, device, progress)


def resume_run(out: str | os.PathLike, device=None, progress: bool = True, data_dir=None) -> Path:
    """Continue the interrupted training of ``out`` from its last complete checkpoint, then finish the run."""
    out = Path(out)
    work = partial_dir(out)
    if not (work / JOB_FILE).is_file():
        state = "is already complete" if (out / "config.json").is_file() else "was never started"
        raise FileNotFoundError(f"nothing to resume: {work / JOB_FILE} does not exist ({out} {state})")
    job = json.loads((work / JOB_FILE).read_text())
    if out.exists() and not job.get("overwrite"):
        raise FileExistsError(f"{out} already exists: the interrupted run was not allowed to replace it")
    return _train_in(work, out, job, load_split(job["data"], data_dir), device, progress)


def _train_in(work: Path, out: Path, job: dict, split: AnomalySplit, device, progress: bool) -> Path:
    config = TrainConfig.from_dict(job["training"])
    checkpoint = work / CHECKPOINT_FILE
    normal_label = split.normal_label(config.labels)
    try:
        model, history, loss = train_embedding(config, split.train_images, split.training_labels(config.labels),
                                               device=device, log_path=work / "train.log", progress=progress,
                                               normal_label=normal_label, checkpoint_path=checkpoint,
                                               return_loss=True)
    except BaseException:
        if not checkpoint.exists():  # nothing worth resuming: leave nothing behind
            shutil.rmtree(work, ignore_errors=True)
        raise
    margin = ClassMargin.from_loss(loss, normal_label) if config.score in MARGIN_SCORES else None
    detector = Detector(model, device=device, score=config.score, **job["detector"]).fit(split.anchor_images, margin)
    if split.calibration_images is not None:  # else: the leave-one-out threshold over the anchors
        detector.calibrate(split.calibration_images, split.calibration_is_anomaly, **job.get("threshold", {}))
    if job.get("skipped_files"):
        write_json(work / "skipped_files.json", job["skipped_files"])
    detector.save(work, extra_config={
        "metricad_version": job["metricad_version"], "data": job["data"], "training": job["training"],
        "training_seconds": sum(h["seconds"] for h in history)})
    checkpoint.unlink()
    (work / JOB_FILE).unlink()
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return out


def update_json(path: Path, values: dict) -> dict:
    """Merge ``values`` into a JSON object file, written atomically."""
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(values)
    write_json(path, current)
    return current


def run_split(run_dir: Path, data_dir=None) -> AnomalySplit:
    config = read_config(Path(run_dir))
    if "data" not in config:
        raise ValueError(f"{run_dir}/config.json has no 'data' section: it was not trained by metricad train")
    return load_split(config["data"], data_dir)


def test_dir_split(test_dir, channels: int, size: tuple[int, int], skip_bad_files: bool = False) -> AnomalySplit:
    """A split whose test images are ``test_dir``'s (good/ + anomalous sub-folders), at a model's input spec."""
    from metricad.data.folders import read_labelled_dir

    test = read_labelled_dir(test_dir, size, channels, skip_bad_files)
    for path, reason in test.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    empty = np.empty((0, *test.images.shape[1:]), np.uint8)
    return AnomalySplit(normal_class=0, anomaly_class=-1, train_images=empty, train_classes=np.empty(0, np.int64),
                        anchor_images=empty, test_images=test.images, test_is_anomaly=test.is_anomaly)
