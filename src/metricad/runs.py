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
from pathlib import Path

import metricad
from metricad.checkpoint import CHECKPOINT_FILE
from metricad.data import AnomalySplit, load_fashion_mnist, make_split
from metricad.detector import Detector, read_config
from metricad.files import write_json
from metricad.training import TrainConfig, train_embedding


def load_split(data: dict, data_dir=None) -> AnomalySplit:
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
    try:
        model, history = train_embedding(config, split.train_images, split.training_labels(config.labels),
                                         device=device, log_path=work / "train.log", progress=progress,
                                         normal_label=split.normal_label(config.labels), checkpoint_path=checkpoint)
    except BaseException:
        if not checkpoint.exists():  # nothing worth resuming: leave nothing behind
            shutil.rmtree(work, ignore_errors=True)
        raise
    detector = Detector(model, device=device, **job["detector"]).fit(split.anchor_images)
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
