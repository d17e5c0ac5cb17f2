"""``metricad update RUN --add-good DIR``: a run learns good images an operator marked, without training.

The detector is fitted again with the new images beside its normal images: a memory bank takes them (PatchCore's
coreset is selected again over old and new patches, so the bank keeps its size), a learned part of the score (the
flow's density) is fitted again on the same images, and the thresholds are set again on the held-out good images
by the rule the run was trained with. That costs one detector fit, no training. The models are not changed: an
embedding trained from scratch remembers the new images as anchors, but is not taught them (that is ``metricad
train`` again). The result is a new version of the run (``metricad.deploy.versions``); a run's own bundle
(``RUN/model.onnx``) is exported again as a new version of the bundle.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from metricad.data.images import list_image_files, load_images
from metricad.deploy.versions import write_bundle_version, write_run_version
from metricad.layout import Layout
from metricad.run import FIT_PARAMS, detector_state, model_id, open_run
from metricad.thresholds import calibrated


def check_learnable(run) -> None:
    """Refuse, naming why, a run whose score cannot take new good images without training."""
    if run.config.get("tiling"):
        raise ValueError(f"{run.path}: a tiled run (--tile) sets its threshold on whole images; update does not "
                         "refit tiled runs yet: train it again with the new images in --normal-dir")
    if run.detector.score_spec_.needs_centres:
        raise ValueError(f"{run.path}: its score {run.detector.score!r} measures margins to class centres learned "
                         "in training; new good images cannot move them: train again (metricad train) with the new "
                         "images among the normal ones")


def refit_with(detector, new_images: np.ndarray):
    """A detector fitted like ``detector`` on its normal images and ``new_images`` (first: a ``first`` anchor
    sampling keeps them), normalised on the same held-out images, its threshold set again by the same rule."""
    params = detector.get_params()
    if params["n_anchors"] is not None:
        params["n_anchors"] += len(new_images)
    normal = np.concatenate([new_images, detector.normal_images_])
    refitted = type(detector)(**params).fit(normal, detector.holdout_images_)
    record = detector.threshold_set_on_ or {}
    if record.get("mode") == "tail":  # the fitted tail of the held-out scores, for the same false-alarm rate
        refitted.offset_, refitted.threshold_set_on_ = calibrated(
            refitted.normal_scores(), None, "tail", detector.contamination, record["target_fpr"])
    elif record.get("mode") not in ("contamination", "leave-one-out"):  # set on labelled images or by hand
        refitted.threshold_set_on_ = refitted.threshold_set_on_ | {"replaces": record.get("mode", "unknown")}
    if getattr(detector, "selection_", None):
        refitted.selection_ = detector.selection_
    return refitted


def update_run(path, add_good, by: str, device=None) -> dict:
    """Teach the run at ``path`` the good images of ``add_good`` (folders, files, globs); write a new version.
    Returns what changed: the versions, model ids, thresholds, the images added and the seconds it took."""
    from safetensors.torch import save_file

    start = time.perf_counter()
    run = open_run(path, device=device)
    check_learnable(run)
    detector = run.detector
    files = list_image_files(add_good)
    channels, size = detector.input_spec
    names, images = load_images(files, size, channels)
    refitted = refit_with(detector, images)
    facts, tensors = detector_state(refitted)
    params = refitted.get_params()

    def edit(config: dict) -> dict:
        config["detector"] = {k: params[k] for k in FIT_PARAMS} | facts
        return config

    change = {"update": "add-good", "images": len(names), "files": [Path(n).name for n in names][:100],
              "anchors": int(len(refitted.anchor_indices_)), "threshold": refitted.offset_,
              "was": detector.offset_}
    version = write_run_version(path, change, by, edit, write_detector=lambda p: save_file(tensors, p))
    bundle = Layout(path).bundle
    if bundle.is_file():
        from metricad.deploy.export import export_run

        write_bundle_version(bundle, change | {"run_version": version}, by,
                             write=lambda v: export_run(path, bundle, bundle_version=v))
    return {"run": str(path), "version": version, "previous_version": run.version, "model_id": model_id(Path(path)),
            "previous_model_id": run.model_id, "threshold": refitted.offset_, "previous_threshold": detector.offset_,
            "threshold_set_on": refitted.threshold_set_on_, "images_added": len(names),
            "bundle": str(bundle) if bundle.is_file() else None, "seconds": round(time.perf_counter() - start, 1)}


__all__ = ["check_learnable", "refit_with", "update_run"]
