"""The run directory's format: ``open_run(path)`` gives every consumer (the command line, the service, the report,
compare, benchmarks) the same view of a run; ``write_run`` and ``finish_partial`` are the only writers of a run's
model files. The file names are ``metricad.layout.Layout``'s.

``config.json`` holds what was trained and how it scores: the format, the data split, the recipe, the models'
recipes, the detector's parameters, its offset and how that was set (``threshold_set_on``), and (with
--score auto) its selection. While training, a run lives in the hidden sibling ``.RUN.partial`` (with
``job.json`` and checkpoints) and becomes ``RUN`` by one rename when complete. Loading reads JSON and
safetensors only: nothing is unpickled, and a missing or mismatched file is an error naming it.

Format 3 (metricad 0.1, issue 27) named the threshold's record ``threshold_set_on``, as bundles do; format 2
called it ``threshold`` and is still read. Format 1 is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

import metricad
from metricad.files import atomic_write, write_json
from metricad.layout import Layout

RUN_FORMAT = 3
READABLE_FORMATS = (2, 3)
# Detector parameters a run records and reopens with (runtime, batch size and device are the caller's choice).
FIT_PARAMS = ("score", "k", "n_anchors", "anchor_sampling", "contamination", "random_state", "fmap_dim", "index",
              "bank_size", "pixel_contamination")


def partial_dir(out: Path) -> Path:
    return Layout(out).partial.root


def _load_tensors(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the run directory")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc


def read_config(directory: Path) -> dict:
    directory = Path(directory)
    path = Layout(directory).config
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such run directory")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (is {directory} a metricad run directory?)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if config.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{path}: run format {config.get('format', 1)!r}, this metricad reads formats "
                         f"{', '.join(map(str, READABLE_FORMATS))}: the run was written by another version of "
                         "metricad; train it again")
    for key in ("models", "detector"):
        if key not in config:
            raise ValueError(f"{path}: missing the {key!r} section")
    if config["format"] == 2:  # format 2 named the threshold's record "threshold"
        config["detector"]["threshold_set_on"] = config["detector"].pop("threshold", None)
    return config


def _build_models(config: dict, directory: Path) -> list:
    from metricad.models import rebuild

    weights = Layout(directory).weights
    state = _load_tensors(weights)
    models = []
    for i, recipe in enumerate(config["models"]):
        model = rebuild(recipe)  # the run's own weights replace a pretrained backbone's starting ones
        prefix = f"member{i}."
        try:
            model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{weights}: weights of member {i} do not match model "
                             f"{recipe['name']!r}: {exc}") from exc
        models.append(model.eval())
    return models


def detector_state(detector) -> tuple[dict, dict]:
    """A fitted detector as JSON-able facts and tensors: every member's experts' fitted buffers, the combiner's
    statistics and the raw scores it was fitted on, the normal (anchor) images, their kept indices and the
    held-out normal images."""
    import numpy as np
    import torch

    tensors = {f"member{m}.{key}.{name}": value.detach().cpu().contiguous()
               for m, member in enumerate(detector.graph_.members) for key, expert in member.experts.items()
               for name, value in expert.fitted_state().items()}
    combiner = detector.graph_.combiner
    tensors |= {"combiner.mean": combiner.mean.cpu().contiguous(), "combiner.std": combiner.std.cpu().contiguous(),
                "normal_parts": detector.normal_parts_.cpu().contiguous(),
                "normal_images": torch.from_numpy(np.ascontiguousarray(detector.normal_images_)),
                "anchor_indices": torch.from_numpy(detector.anchor_indices_.astype(np.int64))}
    if detector.holdout_images_ is not None:
        tensors["holdout_images"] = torch.from_numpy(np.ascontiguousarray(detector.holdout_images_))
    facts = {"offset": detector.offset_, "threshold_set_on": detector.threshold_set_on_}
    if getattr(detector, "pixel_offset_", None) is not None:  # a patch-level expert: where a map says "defect"
        facts |= {"pixel_offset": detector.pixel_offset_, "pixel_threshold_set_on": detector.pixel_threshold_set_on_,
                  "map": asdict(detector.graph_.map_smoothing)}
    if getattr(detector, "selection_", None):  # set by metricad.selection: what chose this score, on what
        facts["selection"] = detector.selection_
    return facts, tensors


def detector_from_state(params: dict, facts: dict, tensors: dict):
    """The detector ``detector_state`` saved, around the models in ``params``; nothing is refitted."""
    from metricad.detector import Detector
    from metricad.scoring.combine import ZScoreMean
    from metricad.scoring.experts import build_expert
    from metricad.scoring.graph import ScoringGraph
    from metricad.scoring.maps import MapSmoothing

    prototype = Detector(**params)  # the parameters with the defaults a saved config may leave out
    prototype._check_params(len(tensors["normal_images"]))
    spec, models = prototype.score_spec_, prototype.models
    experts = []
    for m in range(len(models)):
        fitted = {}
        for key in spec.keys:
            prefix = f"member{m}.{key}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            fitted[key] = build_expert(key, **prototype.expert_params).load_fitted_state(state)
        experts.append(fitted)
    combiner = ZScoreMean(list(spec.one_sided) * len(models))
    combiner.mean, combiner.std = tensors["combiner.mean"], tensors["combiner.std"]
    holdout = tensors["holdout_images"].numpy() if "holdout_images" in tensors else None
    # the smoothing its pixel threshold was set with, whatever this version's default
    smoothing = MapSmoothing(float(facts["map"]["sigma_fraction"]), bool(facts["map"]["aligned_cells"])) if (
        "map" in facts) else None
    graph = ScoringGraph.assemble(models, experts, spec, combiner, smoothing)
    return Detector.from_fitted(prototype.get_params(), graph,
                                tensors["normal_images"].numpy(), tensors["anchor_indices"].numpy(), holdout,
                                tensors["normal_parts"], offset=facts["offset"],
                                threshold_set_on=facts["threshold_set_on"],
                                selection=facts.get("selection"), pixel_offset=facts.get("pixel_offset"),
                                pixel_threshold_set_on=facts.get("pixel_threshold_set_on"))


def model_id(directory: Path, config: dict | None = None) -> str:
    """First 12 hex digits of the SHA-256 of the weights and the fitted detector: names exactly what scores."""
    digest = hashlib.sha256()
    layout = Layout(directory)
    for path in (layout.weights, layout.detector_of(config or read_config(directory))):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class Run:
    """An opened run: its directory, configuration and detector (fitted, ready to score)."""

    path: Path
    config: dict
    detector: object

    @property
    def model_id(self) -> str:
        return model_id(self.path, self.config)

    @property
    def version(self) -> int:
        """1 as trained; each threshold applied or update (``metricad.deploy.versions``) adds one."""
        return int(self.config.get("version", 1))

    @property
    def scorer(self):
        """What scores the run's images: its detector, or for a tiled run (``--tile``) a ``TiledScorer`` around
        it, which scores whole images and holds their threshold."""
        tiling = self.config.get("tiling")
        if not tiling:
            return self.detector
        from metricad.tiling import TiledScorer, Tiling

        return TiledScorer(self.detector, Tiling(tiling["size"], tiling["overlap"]), tiling["image_size"],
                           tiling["offset"], tiling["threshold_set_on"])

    def split(self, data_dir=None):
        """The data split the run was trained on (Fashion-MNIST classes, or image folders)."""
        from metricad.data import load_split

        if "data" not in self.config:
            raise ValueError(f"{Layout(self.path).config} has no 'data' section: it was not trained by metricad train")
        return load_split(self.config["data"], data_dir)

    def update_metrics(self, values: dict) -> dict:
        """Merge ``values`` into ``metrics.json`` (written atomically)."""
        path = Layout(self.path).metrics
        current = json.loads(path.read_text()) if path.is_file() else {}
        current.update(values)
        write_json(path, current)
        return current


def open_run(path, device=None, runtime: str = "torch", **overrides) -> Run:
    """Open the run at ``path`` with its detector ready to score.

    ``overrides`` (any of ``FIT_PARAMS``: ``score``, ``k``, ``n_anchors``, ...) score the run's models another way:
    the detector is then fitted anew on the run's normal images (no training), its threshold recomputed.
    """
    from metricad.detector import Detector

    path = Path(path)
    layout = Layout(path)
    config = read_config(path)
    unknown = set(overrides) - set(FIT_PARAMS)
    if unknown:
        raise ValueError(f"cannot open a run with {', '.join(sorted(unknown))}: only {', '.join(FIT_PARAMS)}")
    saved = {k: v for k, v in config["detector"].items() if k in FIT_PARAMS}
    changed = {k: v for k, v in overrides.items() if v is not None and v != saved.get(k)}
    params = saved | changed | {"model": _build_models(config, path), "runtime": runtime, "device": device}
    detector_file = layout.detector_of(config)
    tensors = _load_tensors(detector_file)
    if changed:
        for key in ("normal_images", "anchor_indices"):
            if key not in tensors:
                raise ValueError(f"{detector_file}: missing tensor {key!r}")
        detector = Detector(**params).fit(tensors["normal_images"].numpy(),
                                          tensors["holdout_images"].numpy() if "holdout_images" in tensors else None)
    else:
        try:
            detector = detector_from_state(params, config["detector"], tensors)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{detector_file}: does not match {layout.config} ({exc})") from exc
    return Run(path, config, detector)


def model_recipe(model) -> dict:
    """What a run saves to build ``model`` again: its own ``recipe()`` (a registered ``metricad.models`` model)."""
    if not callable(getattr(model, "recipe", None)):
        raise ValueError(f"a {type(model).__name__} can be fitted and scored but not saved in a run: it does not "
                         "describe itself; subclass metricad.models.base.EmbeddingModel and register it with "
                         "metricad.models.register_model")
    return model.recipe()


def write_run(directory: Path, detector, facts: dict) -> Path:
    """Write a fitted detector and its models into ``directory`` (each file atomically); ``facts`` (data split,
    recipe, timings, selection) go into ``config.json`` beside what the detector itself records."""
    directory = Path(directory)
    detector._check_fitted()
    recipes = [model_recipe(model) for model in detector.models]  # refused before anything is written
    detector_facts, tensors = detector_state(detector)
    weights = {f"member{i}.{k}": v.detach().cpu().contiguous()
               for i, model in enumerate(detector.models) for k, v in model.state_dict().items()}
    params = detector.get_params()
    layout = Layout(directory)
    config = {"format": RUN_FORMAT, "metricad_version": metricad.__version__, **facts,
              "models": recipes, "detector": {k: params[k] for k in FIT_PARAMS} | detector_facts}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(layout.weights, lambda p: save_file(weights, p))
    atomic_write(layout.detector, lambda p: save_file(tensors, p))
    write_json(layout.config, config)
    return directory


def start_partial(out: Path, job: dict) -> Path:
    """A fresh ``.OUT.partial`` directory holding ``job.json`` (what to train), for ``finish_partial``."""
    work = Layout(out).partial
    if work.root.exists():
        shutil.rmtree(work.root)  # a stale partial run: this is a fresh start
    work.root.mkdir(parents=True)
    write_json(work.job, job)
    return work.root


def read_job(out: Path) -> dict:
    job_file = Layout(out).partial.job
    if not job_file.is_file():
        state = "is already complete" if Layout(out).config.is_file() else "was never started"
        raise FileNotFoundError(f"nothing to resume: {job_file} does not exist ({out} {state})")
    job = json.loads(job_file.read_text())
    if Path(out).exists() and not job.get("overwrite"):
        raise FileExistsError(f"{out} already exists: the interrupted run was not allowed to replace it")
    return job


def finish_partial(work: Path, out: Path) -> Path:
    """Drop the partial run's job and checkpoints, then rename it onto ``out`` in one step."""
    for path in [Layout(work).job, *Layout(work).checkpoints()]:
        path.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return out


def check_new(out: Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: choose another --out or pass --overwrite")
    return out


__all__ = ["FIT_PARAMS", "READABLE_FORMATS", "RUN_FORMAT", "Run", "check_new", "finish_partial", "model_id",
           "open_run", "partial_dir", "read_config", "read_job", "start_partial", "write_run"]
