"""Training a run: load the split -> train the embedding model(s) -> fit the detector -> threshold -> write the run.

Everything is written into ``.OUT.partial`` first, with a checkpoint after every epoch of every ensemble member,
and becomes ``OUT`` by one rename when complete (``metricad.run``). ``resume_run`` continues after a crash or a
kill from the last complete epoch; a finished member is not trained again. Under ``torchrun`` every rank runs
these same steps (``metricad.distributed``); rank 0 alone writes the partial run, its checkpoints and the run.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import metricad
from metricad import distributed
from metricad import run as run_dir
from metricad.data import load_split
from metricad.files import write_json
from metricad.layout import Layout
from metricad.recipe import TrainConfig
from metricad.scoring.spec import AUTO
from metricad.thresholds import calibrated, threshold_request
from metricad.train.config import checked


def train_run(out, config: TrainConfig, source, threshold: dict | None = None, detector_params: dict | None = None,
              device=None, overwrite: bool = False, progress: bool = True) -> Path:
    """Train on the images of ``source`` (``metricad.data.sources``: Fashion-MNIST classes, image folders, ...)
    and write the run ``out``.

    ``threshold``: ``{"mode": "contamination" | "fpr" | "f1", "contamination": ..., "target_fpr": ...}``
    (``metricad.thresholds.threshold_request``; the default where a key is left out); a mode other than
    contamination, like ``config.score == "auto"``, needs the source's labelled validation images."""
    out = run_dir.check_new(out, overwrite)
    checked(config)
    device = distributed.init(device) or device
    threshold = threshold_request(**(threshold or {}))
    source.check(config.score == AUTO, threshold)
    config = source.adapt(config)
    split, skipped = source.load()  # fails early (no data, bad classes) before anything is written
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s), listed in {Layout(out).skipped_files}:", file=sys.stderr)
        for path, reason in skipped[:10]:
            print(f"  {path}: {reason}", file=sys.stderr)
    job = {"metricad_version": metricad.__version__, "data": source.describe(), "training": config.to_dict(),
           "detector": detector_params or {}, "threshold": threshold, "overwrite": overwrite,
           "skipped_files": skipped, "threads": _threads()}
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
    from metricad.train.loop import train_embedding

    models, seconds = [], 0.0
    normal_label = split.normal_label(config.labels)
    for i, seed in enumerate(config.member_seeds()):
        if progress and config.ensemble > 1:
            print(f"ensemble member {i + 1}/{config.ensemble} (seed {seed})", file=sys.stderr)
        model, history = train_embedding(
            replace(config, seed=seed), split.train_images, split.training_labels(config.labels), device=device,
            progress=progress, normal_label=normal_label,
            log_path=None if work is None else Layout(work).log(i, config.ensemble),
            checkpoint_path=None if work is None else Layout(work).checkpoint(i))
        models.append(model)
        seconds += sum(record["seconds"] for record in history)
    return models, seconds


def fit_detector(models, split, score: str, threshold: dict | None = None, device=None, **params):
    """The detector of trained ``models`` on ``split``: anchors, experts normalised on the held-out normal images
    (if any), and the threshold (``threshold``, ``metricad.thresholds.threshold_request``: its contamination
    sets the quantile of normal scores; a mode needing the labelled validation images sets it there).
    ``score="auto"``: the labelled validation images choose the score and set the threshold."""
    from metricad.detector import Detector

    threshold = threshold_request(**(threshold or {}))
    params = {"contamination": threshold["contamination"]} | params
    if score == AUTO:
        from metricad import selection

        if split.val_images is None:
            raise ValueError("--score auto needs labelled validation images: --val-anomalies K (Fashion-MNIST) or "
                             "--val-dir DIR (folders)")
        union = Detector(models, score=selection.union_for(models), device=device, **params).fit(
            split.anchor_images, split.holdout_images)
        return selection.select(union, split.val_images, split.val_is_anomaly)[0]
    detector = Detector(models, score=score, device=device, **params).fit(split.anchor_images, split.holdout_images)
    if threshold["mode"] == "tail":  # the held-out good images' tail, fitted for the target false-alarm rate
        if split.holdout_images is None:
            raise ValueError("threshold mode 'tail' fits the held-out good images' scores: keep some out (--holdout)")
        detector.offset_, detector.threshold_set_on_ = calibrated(detector.normal_scores(), None, **threshold)
    elif split.val_images is not None and (threshold["mode"] != "contamination" or split.holdout_images is None):
        detector.calibrate(split.val_images, split.val_is_anomaly, **threshold)
    return detector


def _run_job(work: Path, out: Path, job: dict, split, device, progress: bool) -> Path:
    config = TrainConfig.from_dict(job["training"])
    tiling, whole = tiling_of(job["data"]), split
    if tiling is not None:  # the model learns and remembers tiles; the threshold is then set on whole images
        from metricad.data.split import tiled_split

        split = tiled_split(split, tiling)
    try:
        models, seconds = train_members(config, split, work, device, progress)
        detector = fit_detector(models, split, config.score, job.get("threshold"), device, **job["detector"])
    except BaseException:
        if distributed.is_main() and not Layout(work).checkpoints():
            shutil.rmtree(work, ignore_errors=True)  # nothing worth resuming: leave nothing behind
        raise
    facts = {"data": job["data"], "training": job["training"], "training_seconds": seconds,
             "processes": distributed.world(), "threads": job.get("threads")}
    if tiling is not None:
        facts["tiling"] = tiled_threshold(detector, tiling, whole)
    if distributed.is_main():
        if job.get("skipped_files"):
            write_json(Layout(work).skipped_files, job["skipped_files"])
        run_dir.write_run(work, detector, facts)
        run_dir.finish_partial(work, out)
    distributed.barrier()
    return out


def tiling_of(data: dict):
    """The ``metricad.tiling.Tiling`` a run's data section asks for, or None."""
    if not data.get("tiling"):
        return None
    from metricad.tiling import Tiling

    return Tiling(data["tiling"]["size"], data["tiling"].get("overlap", 0))


def tiled_threshold(detector, tiling, whole) -> dict:
    """A tiled run's image threshold, set on the held-out normal images scored whole (their worst tile), as the
    ``"tiling"`` section of its ``config.json``."""
    from metricad.tiling import TiledScorer, calibrate_tiled

    if whole.holdout_images is None or len(whole.holdout_images) < 2:
        raise ValueError("--tile needs held-out good images to set the image threshold on: --holdout 0.1 or more")
    scorer = calibrate_tiled(TiledScorer(detector, tiling, whole.holdout_images.shape[-2:]), whole.holdout_images,
                             detector.contamination)
    return tiling.describe(whole.holdout_images.shape[-2:]) | {"offset": scorer.offset_,
                                                               "threshold_set_on": scorer.threshold_set_on_}
