"""Training a run: load the split -> train the embedding model(s) -> fit the detector -> threshold -> write the run.

Everything is written into ``.OUT.partial`` first, with a checkpoint after every epoch of every ensemble member,
and becomes ``OUT`` by one rename when complete (``metricad.run``). ``resume_run`` continues after a crash or a
kill from the last complete epoch; a finished member is not trained again. Under ``torchrun`` every rank runs
these same steps (``metricad.distributed``); rank 0 alone writes the partial run, its checkpoints and the run.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import metricad
from metricad import distributed
from metricad import run as run_dir
from metricad.data import load_split
from metricad.data.folders import folder_split, infer_input_spec, list_images
from metricad.data.negatives import check_fits, misfits
from metricad.files import write_json
from metricad.recipe import PRESETS, TrainConfig
from metricad.scoring.spec import AUTO


def checkpoint_file(member: int) -> str:
    return f"checkpoint-{member}.safetensors"


def log_file(member: int, members: int) -> str:
    return run_dir.LOG if members == 1 else f"train-{member}.log"


def train_run(out, config: TrainConfig, normal: int = 7, anomaly: int = 9, limit: int | None = None, data_dir=None,
              device=None, detector_params: dict | None = None, overwrite: bool = False, progress: bool = True,
              val_anomalies: int = 0, val_seed: int = 0) -> Path:
    """Train on the Fashion-MNIST split ``normal`` vs ``anomaly`` (never trained on) and write the run ``out``.

    ``val_anomalies`` K > 0: K anomaly images drawn (``val_seed``) from the anomaly class's training images join
    the held-out normal images as a labelled validation set, for ``--score auto`` (``metricad.selection``)."""
    out = run_dir.check_new(out, overwrite)
    config.validate()
    device = distributed.init(device) or device
    if (config.score == AUTO) != bool(val_anomalies):
        raise ValueError("--score auto chooses with a few labelled anomalies: give --val-anomalies K with it (and "
                         "only with it)")
    job = {"metricad_version": metricad.__version__,
           "data": {"dataset": "fashion-mnist", "normal": normal, "anomaly": anomaly, "limit": limit,
                    "split_seed": config.seed, "holdout": config.holdout,
                    **({"val_anomalies": val_anomalies, "val_seed": val_seed} if val_anomalies else {})},
           "training": config.to_dict(), "detector": detector_params or {}, "overwrite": overwrite,
           "threads": _threads()}
    split = load_split(job["data"], data_dir)  # fails early (no data, bad classes) before anything is written
    return _run_job(_start(out, job), out, job, split, device, progress)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _start(out: Path, job: dict) -> Path:
    """The fresh partial run (rank 0 makes it; the other ranks wait for it)."""
    if distributed.is_main():
        run_dir.start_partial(out, job)
    distributed.barrier()
    return run_dir.partial_dir(out)


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


def train_folder_run(out, config: TrainConfig, normal_dir, reference_dir, val_dir=None,
                     image_size: tuple[int, int] | None = None, channels: int | None = None,
                     holdout: float | None = None, skip_bad_files: bool = False, threshold: dict | None = None,
                     device=None, overwrite: bool = False, progress: bool = True,
                     detector_params: dict | None = None) -> Path:
    """Train on image folders (see ``data.folders``) and write the run directory ``out``.

    ``image_size`` / ``channels`` default to what the normal images are (``infer_input_spec``). ``holdout``
    (default 0.1) keeps that fraction of the normal images out of training and anchors, to normalise the experts
    and set the threshold on. ``threshold``: ``{"mode": ..., "contamination"/"target_fpr": ...}``.
    """
    out = run_dir.check_new(out, overwrite)
    config.validate()
    device = distributed.init(device) or device
    threshold = dict(threshold or {"mode": "contamination"})
    if (threshold["mode"] in ("f1", "fpr") or config.score == AUTO) and not val_dir:
        raise ValueError(f"{'--score auto' if config.score == AUTO else 'threshold mode ' + repr(threshold['mode'])} "
                         "needs labelled images: pass --val-dir")
    holdout = 0.1 if holdout is None else holdout
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
    config = TrainConfig.from_dict({**config.to_dict(), "holdout": holdout, "model_kwargs": {
        **config.model_kwargs, "input_size": list(image_size), "in_channels": channels}})
    config = _negatives_for_input(config, tuple(image_size))
    split, skipped = folder_split(data)
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s), listed in {out}/skipped_files.json:", file=sys.stderr)
        for path, reason in skipped[:10]:
            print(f"  {path}: {reason}", file=sys.stderr)
    job = {"metricad_version": metricad.__version__, "data": data, "training": config.to_dict(),
           "detector": detector_params or {}, "threshold": threshold, "overwrite": overwrite,
           "skipped_files": skipped, "threads": _threads()}
    return _run_job(_start(out, job), out, job, split, device, progress)


def resume_run(out, device=None, progress: bool = True, data_dir=None) -> Path:
    """Continue the interrupted training of ``out`` from its last complete checkpoint, then finish the run."""
    out = Path(out)
    job = run_dir.read_job(out)
    if job.get("threads"):  # the thread count it started with: the same sums, the uninterrupted run's weights
        import torch

        torch.set_num_threads(job["threads"])
    device = distributed.init(device) or device
    return _run_job(run_dir.partial_dir(out), out, job, load_split(job["data"], data_dir), device, progress)


def train_members(config: TrainConfig, split, work: Path | None = None, device=None, progress: bool = True):
    """Train the recipe's ensemble members in turn (one model unless ``config.ensemble`` > 1); with ``work``,
    each checkpoints there and a finished one is loaded instead of trained again. Returns (models, seconds)."""
    from metricad.training import train_embedding

    models, seconds = [], 0.0
    normal_label = split.normal_label(config.labels)
    for i, seed in enumerate(config.member_seeds()):
        if progress and config.ensemble > 1:
            print(f"ensemble member {i + 1}/{config.ensemble} (seed {seed})", file=sys.stderr)
        model, history = train_embedding(
            replace(config, seed=seed), split.train_images, split.training_labels(config.labels), device=device,
            progress=progress, normal_label=normal_label,
            log_path=None if work is None else work / log_file(i, config.ensemble),
            checkpoint_path=None if work is None else work / checkpoint_file(i))
        models.append(model)
        seconds += sum(record["seconds"] for record in history)
    return models, seconds


def fit_detector(models, split, score: str, threshold: dict | None = None, device=None, **params):
    """The detector of trained ``models`` on ``split``: anchors, experts normalised on the held-out normal images
    (if any), and the threshold (``threshold``: a mode needing the labelled validation images sets it there).
    ``score="auto"``: the labelled validation images choose the score and set the threshold."""
    from metricad.detector import Detector

    if score == AUTO:
        from metricad import selection

        if split.val_images is None:
            raise ValueError("--score auto needs labelled validation images: --val-anomalies K (Fashion-MNIST) or "
                             "--val-dir DIR (folders)")
        union = Detector(models, score=selection.union_for(models), device=device, **params).fit(
            split.anchor_images, split.holdout_images)
        return selection.select(union, split.val_images, split.val_is_anomaly)[0]
    detector = Detector(models, score=score, device=device, **params).fit(split.anchor_images, split.holdout_images)
    threshold = dict(threshold or {"mode": "contamination"})
    if split.val_images is not None and (threshold["mode"] != "contamination" or split.holdout_images is None):
        detector.calibrate(split.val_images, split.val_is_anomaly, **threshold)
    return detector


def _run_job(work: Path, out: Path, job: dict, split, device, progress: bool) -> Path:
    config = TrainConfig.from_dict(job["training"])
    try:
        models, seconds = train_members(config, split, work, device, progress)
    except BaseException:
        if distributed.is_main() and not any(work.glob("checkpoint-*.safetensors")):
            shutil.rmtree(work, ignore_errors=True)  # nothing worth resuming: leave nothing behind
        raise
    detector = fit_detector(models, split, config.score, job.get("threshold"), device, **job["detector"])
    if distributed.is_main():
        if job.get("skipped_files"):
            write_json(work / "skipped_files.json", job["skipped_files"])
        run_dir.write_run(work, detector, {"data": job["data"], "training": job["training"],
                                           "training_seconds": seconds, "processes": distributed.world(),
                                           "threads": job.get("threads")})
        run_dir.finish_partial(work, out, [checkpoint_file(i) for i in range(config.ensemble)])
    distributed.barrier()
    return out
