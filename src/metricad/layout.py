"""Every file name of a run directory, in one place: ``Layout(RUN).config`` and so on.

``metricad.run`` reads and writes the model files; the later steps (evaluate, benchmark, report, export,
reproduce) write theirs beside them, and training works in the hidden sibling ``.RUN.partial``. Torch-free.

    RUN/config.json           what was trained and how it scores (``metricad.run``)
    RUN/weights.safetensors   the trained models' weights (member i under "member{i}.")
    RUN/detector.safetensors  the fitted detector's tensors (a later version's: the file config.json names)
    RUN/versions/             earlier versions' config.json and history.jsonl, who changed what (``deploy.versions``)
    RUN/corrections/          images an operator marked on the service's page: good/, defect/, learned/
    RUN/train.log             one JSON line per epoch (``train-<i>.log`` per ensemble member)
    RUN/metrics.json, benchmark.json, benchmark.md, figure.png, report.html, model.onnx, skipped_files.json
    .RUN.partial/             while training: the run so far, ``job.json`` and ``checkpoint-<i>.safetensors``
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    config = property(lambda self: self.root / "config.json")
    weights = property(lambda self: self.root / "weights.safetensors")
    detector = property(lambda self: self.root / "detector.safetensors")
    metrics = property(lambda self: self.root / "metrics.json")
    benchmark_json = property(lambda self: self.root / "benchmark.json")
    benchmark_md = property(lambda self: self.root / "benchmark.md")
    figure = property(lambda self: self.root / "figure.png")
    report = property(lambda self: self.root / "report.html")
    bundle = property(lambda self: self.root / "model.onnx")
    skipped_files = property(lambda self: self.root / "skipped_files.json")
    job = property(lambda self: self.root / "job.json")  # in the partial run only
    versions = property(lambda self: self.root / "versions")
    corrections = property(lambda self: self.root / "corrections")

    def detector_of(self, config: dict) -> Path:
        """The detector file of the version ``config`` describes (``detector_file``; the first version's default)."""
        return self.root / config.get("detector_file", "detector.safetensors")

    @property
    def partial(self) -> "Layout":
        """The hidden sibling ``.RUN.partial`` that a run is trained in."""
        return Layout(self.root.parent / f".{self.root.name}.partial")

    def log(self, member: int = 0, members: int = 1) -> Path:
        return self.root / ("train.log" if members == 1 else f"train-{member}.log")

    def checkpoint(self, member: int) -> Path:
        return self.root / f"checkpoint-{member}.safetensors"

    def checkpoints(self) -> list[Path]:
        return sorted(self.root.glob("checkpoint-*.safetensors"))
