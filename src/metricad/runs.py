"""Run directories: train into one atomically, and read back the data split a run was trained on.

A run directory holds everything: ``config.json`` (data split, training config, model recipe, detector
parameters), ``weights.safetensors``, ``anchors.safetensors``, ``train.log`` and, once evaluated,
``metrics.json``, ``benchmark.json``/``benchmark.md`` and ``figure.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import metricad
from metricad.data import AnomalySplit, load_fashion_mnist, make_split
from metricad.detector import Detector, read_config
from metricad.files import write_json
from metricad.training import TrainConfig, train_embedding


def load_split(data: dict, data_dir=None) -> AnomalySplit:
    train, test = load_fashion_mnist(data_dir)
    return make_split(train, test, data["normal"], data["anomaly"], data.get("limit"), data.get("split_seed", 0))


def train_run(out: str | os.PathLike, config: TrainConfig, normal: int = 7, anomaly: int = 9,
              limit: int | None = None, data_dir=None, device=None, detector_params: dict | None = None,
              overwrite: bool = False, progress: bool = True) -> Path:
    """Train on the Fashion-MNIST split, fit the anchors and write the run directory ``out``.

    Everything is written into a temporary sibling directory that replaces ``out`` only once complete.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: choose another --out or pass --overwrite")
    data = {"dataset": "fashion-mnist", "normal": normal, "anomaly": anomaly, "limit": limit,
            "split_seed": config.seed}
    split = load_split(data, data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a run directory is an ordinary one
    try:
        model, history = train_embedding(config, split.train_images, split.training_labels(config.labels),
                                         device=device, log_path=tmp / "train.log", progress=progress,
                                         normal_label=split.normal_label(config.labels))
        detector = Detector(model, device=device, **(detector_params or {})).fit(split.anchor_images)
        detector.save(tmp, extra_config={
            "metricad_version": metricad.__version__, "data": data, "training": config.to_dict(),
            "training_seconds": sum(h["seconds"] for h in history)})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
