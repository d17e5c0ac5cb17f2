"""``metricad export RUN --out part.onnx``: a run written as the one-file model bundle (``metricad.deploy.bundle``):
its whole scoring graph as ONNX, and as metadata what a torch-free scorer needs to feed it and to decide."""

from __future__ import annotations

from pathlib import Path

import metricad
from metricad.deploy.bundle import BUNDLE_FORMAT, bundle_metadata
from metricad.files import atomic_write
from metricad.run import open_run
from metricad.scoring.onnx_graph import export_graph


def export_run(path, out, bundle_version: int | None = None) -> str:
    """Write the run at ``path`` as the model bundle ``out``; returns a one-line summary. ``bundle_version``
    (``metricad.deploy.versions``): the run's version unless given."""
    import onnx

    run = open_run(path, device="cpu")
    detector = run.detector
    exact = "" if detector.index == "exact" else (
        f"; the run's {detector.index} index is exported as an exact search over the same "
        f"{len(detector.anchor_indices_)} anchors")
    channels, (height, width) = detector.input_spec
    model = onnx.load_from_string(export_graph(detector.graph_, detector.input_spec))
    facts = {"format": BUNDLE_FORMAT, "version": metricad.__version__, "model_id": run.model_id,
             "score": detector.score, "offset": detector.offset_, "threshold_set_on": detector.threshold_set_on_,
             "input": {"name": "images", "channels": channels, "height": height, "width": width,
                       "layout": "NCHW", "dtype": "float32", "range": [0, 1]},
             "preprocessing": {"decode": "Pillow", "mode": "L" if channels == 1 else "RGB",
                               "resize": "bilinear to height x width", "scale": "uint8 / 255"},
             "outputs": {"score": "(N,) higher = more anomalous; anomaly when score > offset",
                         "parts": "(N, members x experts) raw expert scores"}
             | ({"anomaly_map": "(N, H, W) at the input's resolution, z-score units; defect where > pixel_offset "
                                "in an image flagged by offset"} if detector.graph_.has_map else {}),
             "max_batch": min(512, detector.graph_.max_batch),  # images per ONNX call its memory allows
             "members": len(detector.models), "anchors": int(len(detector.anchor_indices_)),
             "models": run.config["models"], "bundle_version": bundle_version or run.version,
             "run_version": run.version}
    if not run.config.get("tiling"):  # the good images' scores the threshold was set on: the page's histogram
        facts["normal_scores"] = [round(float(s), 5) for s in detector.normal_scores()]
    if run.config.get("tiling"):  # the graph scores tiles: how to cut images and their own threshold
        facts["tiling"] = run.config["tiling"]
    if detector.graph_.has_map:
        facts |= {"pixel_offset": detector.pixel_offset_, "pixel_threshold_set_on": detector.pixel_threshold_set_on_}
    for key, value in bundle_metadata(facts).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(out)
    map_output = ", 'anomaly_map'" if detector.graph_.has_map else ""
    atomic_write(out, lambda p: onnx.save(model, p))
    return (f"{out}: input 'images' float32 (N, {channels}, {height}, {width}) in [0, 1]; outputs 'score' (anomaly "
            f"when > {detector.offset_:.4f}), 'parts'{map_output}; model {run.model_id}, score {detector.score}, "
            f"{out.stat().st_size / 2**20:.1f} MB{exact}")
