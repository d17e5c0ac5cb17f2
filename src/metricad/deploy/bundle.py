"""The one-file model bundle, torch-free: an ONNX file holding a run's whole scoring graph (every model and expert,
the anchors, the normalisation) and, as metadata, what is needed to feed it and to decide.

``metricad export RUN --out part.onnx`` writes one (``metricad.deploy.export``); a light install
(``pip install metricad``: numpy, Pillow, safetensors, ONNX Runtime) scores it with ``Bundle``::

    bundle = Bundle("part.onnx")
    scores = bundle.score_samples(images)        # uint8 (N, H, W) or (N, 3, H, W), or floats in [0, 1]
    flags = bundle.predict_scores(scores)        # 1 = anomaly
    scores, maps = bundle.score_with_maps(images)  # a patch-level score: anomaly maps (N, H, W) too
    masks = bundle.predict_masks(scores, maps)   # where the defect is
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metricad.localization import require_map
from metricad.preprocessing import to_model_array
from metricad.scoring.onnx_session import make_session, run_batches
from metricad.thresholds import Decisions

# Bundle 2 (issue 27) holds the decision as a run does: "offset" (anomaly when score > offset) and
# "threshold_set_on" (how it was set). Bundle 1 called the offset "threshold"; it is still read.
BUNDLE_FORMAT = "metricad-bundle-2"
READABLE_FORMATS = ("metricad-bundle-1", BUNDLE_FORMAT)
PREFIX = "metricad."
REQUIRED = ("format", "version", "model_id", "score", "threshold_set_on", "input", "preprocessing")
OFFSET_KEY = {"metricad-bundle-1": "threshold", BUNDLE_FORMAT: "offset"}


def bundle_metadata(facts: dict) -> dict[str, str]:
    """``facts`` as ONNX metadata properties (string values; JSON for structures)."""
    return {PREFIX + key: value if isinstance(value, str) else json.dumps(value) for key, value in facts.items()}


class Bundle(Decisions):
    """A model bundle ready to score: the ``metricad.deploy.scorer.Scorer`` interface without torch."""

    def __init__(self, path, threads: int | None = None, use_cuda: bool = False, batch_size: int = 512):
        self.path, self.batch_size = Path(path), batch_size
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such model bundle")
        try:
            self.session = make_session(str(self.path), threads, use_cuda)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types for unreadable models
            raise ValueError(f"{self.path}: not a readable ONNX model ({exc})") from exc
        raw = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in REQUIRED if PREFIX + key not in raw]
        if missing:
            raise ValueError(f"{self.path}: not a metricad model bundle (no {', '.join(PREFIX + k for k in missing)} "
                             "metadata): export one with metricad export RUN --out FILE.onnx")
        meta = {key[len(PREFIX):]: value for key, value in raw.items() if key.startswith(PREFIX)}
        if meta["format"] not in READABLE_FORMATS:
            raise ValueError(f"{self.path}: bundle format {meta['format']!r}, this metricad reads "
                             f"{' and '.join(map(repr, READABLE_FORMATS))}: export it again with this metricad")
        offset_key = OFFSET_KEY[meta["format"]]
        if PREFIX + offset_key not in raw:
            raise ValueError(f"{self.path}: a {meta['format']} bundle without {PREFIX + offset_key} metadata")
        meta["offset"] = meta.pop(offset_key)
        self.metadata = {k: v if k in ("format", "version", "model_id", "score") else json.loads(v)
                         for k, v in meta.items()}
        spec = self.metadata["input"]
        self.input_spec = (int(spec["channels"]), (int(spec["height"]), int(spec["width"])))
        self.offset_ = float(self.metadata["offset"])
        self.score, self.model_id = self.metadata["score"], self.metadata["model_id"]
        self.version = int(self.metadata.get("bundle_version", 1))  # metricad.deploy.versions
        self.batch_size = min(self.batch_size, int(self.metadata.get("max_batch", self.batch_size)))
        self.has_map = "anomaly_map" in {output.name for output in self.session.get_outputs()}
        pixel_offset = self.metadata.get("pixel_offset")
        self.pixel_offset_ = None if pixel_offset is None else float(pixel_offset)

    def _run(self, images, names: list[str]) -> tuple[np.ndarray, ...]:
        return run_batches(self.session, to_model_array(images, *self.input_spec), names, self.batch_size)

    def score_parts(self, images) -> tuple[np.ndarray, np.ndarray]:
        return self._run(images, ["score", "parts"])

    def score_with_maps(self, images) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (N,), anomaly maps (N, H, W))`` at the model input's resolution, as the run gives them."""
        require_map(self, f"{self.path}: ")
        return self._run(images, ["score", "anomaly_map"])

    def score_samples(self, images) -> np.ndarray:
        return self.score_parts(images)[0]

    def normal_scores(self):
        """The scores of the good images the threshold was set on (held out from the bank), as exported; None
        for a bundle exported without them."""
        scores = self.metadata.get("normal_scores")
        return None if scores is None else np.asarray(scores, dtype=np.float64)

    def tiled(self):
        """A bundle of a tiled run as a scorer of whole images (``metricad.tiling.TiledScorer``)."""
        from metricad.tiling import TiledScorer, Tiling

        tiling = self.metadata["tiling"]
        return TiledScorer(self, Tiling(tiling["size"], tiling["overlap"]), tiling["image_size"], tiling["offset"],
                           tiling["threshold_set_on"])

    def describe(self) -> dict:
        """What ``/info`` and a log line say about the bundle."""
        return {"bundle": str(self.path), **self.metadata}
