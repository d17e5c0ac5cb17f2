"""Images larger than the model input, scored tile by tile (``--tile SIZE --tile-overlap PX``).

An image is cut into ``size`` x ``size`` tiles overlapping by at least ``overlap`` pixels (the last row and column
of tiles end on the image's edge); every tile is scored by the run's detector; the image scores as its worst tile
(the patch expert's image score is its worst patch, so this is the same rule one level up) and its anomaly map
is the tiles' maps stitched back at full resolution, overlaps averaged. Only one image's tiles are held at a
time, so memory follows the tile, not the image (a 4000x1000 image: BENCHMARKS.md).

Numpy only: ``TiledScorer`` wraps a run's detector and a torch-free bundle alike. The image threshold of a tiled
run is set on held-out normal *images* scored this way (``calibrate_tiled``), not on their tiles: an image has
many tiles, and its worst one is higher than a typical tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metricad.thresholds import Decisions, calibrated


@dataclass(frozen=True)
class Tiling:
    size: int
    overlap: int = 0

    def __post_init__(self):
        if self.size < 4:
            raise ValueError(f"--tile must be at least 4 pixels, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"--tile-overlap must be in [0, {self.size}), got {self.overlap}")

    def starts(self, length: int) -> list[int]:
        """Tile starts along a side of ``length`` pixels: a stride of ``size - overlap``, the last tile on the edge."""
        if length < self.size:
            raise ValueError(f"an image side of {length} pixels is smaller than the tile ({self.size})")
        stride = self.size - self.overlap
        starts = list(range(0, length - self.size + 1, stride))
        if starts[-1] != length - self.size:
            starts.append(length - self.size)
        return starts

    def boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(y, x) for y in self.starts(height) for x in self.starts(width)]

    def split(self, image: np.ndarray) -> np.ndarray:
        """One image ``(H, W)`` or ``(C, H, W)`` -> its tiles ``(T, [C,] size, size)``."""
        height, width = image.shape[-2:]
        return np.stack([image[..., y:y + self.size, x:x + self.size] for y, x in self.boxes(height, width)])

    def split_all(self, images: np.ndarray) -> np.ndarray:
        """The tiles of every image of a batch, image after image."""
        return np.concatenate([self.split(image) for image in images]) if len(images) else images

    def stitch(self, tile_maps: np.ndarray, height: int, width: int) -> np.ndarray:
        """One image's tile maps ``(T, size, size)`` -> its ``(H, W)`` map, overlapping pixels averaged."""
        total, count = np.zeros((height, width), np.float64), np.zeros((height, width), np.float64)
        for (y, x), tile in zip(self.boxes(height, width), tile_maps):
            total[y:y + self.size, x:x + self.size] += tile
            count[y:y + self.size, x:x + self.size] += 1
        return (total / count).astype(np.float32)

    def describe(self, image_size) -> dict:
        return {"size": self.size, "overlap": self.overlap, "image_size": [int(v) for v in image_size]}


class TiledScorer(Decisions):
    """A scorer of tiles (a run's detector, a bundle) as a scorer of whole images of ``image_size``: the
    ``metricad.deploy.scorer`` interface, with maps. Other attributes are the tile scorer's."""

    def __init__(self, tile_scorer, tiling: Tiling, image_size, offset: float | None = None,
                 threshold_set_on: dict | None = None):
        self.tile_scorer, self.tiling = tile_scorer, tiling
        channels, _ = tile_scorer.input_spec
        self.input_spec = (channels, (int(image_size[0]), int(image_size[1])))
        self.offset_ = tile_scorer.offset_ if offset is None else float(offset)
        self.threshold_set_on_ = threshold_set_on

    def __getattr__(self, name):  # model_id, score, has_map, describe, ...: the tile scorer's
        return getattr(self.tile_scorer, name)

    def _tiles(self, images) -> tuple[list[np.ndarray], int]:
        images = np.asarray(images)
        if images.ndim == 4 and images.shape[1] == 1:
            images = images[:, 0]
        return [self.tiling.split(image) for image in images], len(images)

    def score_samples(self, images) -> np.ndarray:
        tiles, n = self._tiles(images)
        return np.array([self.tile_scorer.score_samples(t).max() for t in tiles], np.float32).reshape(n)

    def score_with_maps(self, images) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, maps (N, H, W))``: each image's worst tile, and its tiles' maps stitched."""
        tiles, n = self._tiles(images)
        height, width = self.input_spec[1]
        scores, maps = np.empty(n, np.float32), np.empty((n, height, width), np.float32)
        for i, image_tiles in enumerate(tiles):
            tile_scores, tile_maps = self.tile_scorer.score_with_maps(image_tiles)
            scores[i], maps[i] = tile_scores.max(), self.tiling.stitch(tile_maps, height, width)
        return scores, maps

    @property
    def pixel_offset_(self):  # the pixel threshold is the tile scorer's: a map value means the same in a tile
        return self.tile_scorer.pixel_offset_

    def describe(self) -> dict:
        return self.tile_scorer.describe() | {"tiling": self.tiling.describe(self.input_spec[1]),
                                               "offset": self.offset_, "threshold_set_on": self.threshold_set_on_}


def calibrate_tiled(scorer: TiledScorer, normal_images, contamination: float) -> TiledScorer:
    """Set ``scorer``'s image threshold on normal images scored whole (their worst tile)."""
    offset, record = calibrated(scorer.score_samples(normal_images), None, "contamination", contamination, 0.01)
    scorer.offset_, scorer.threshold_set_on_ = offset, record | {"images": "held-out normal images, tiled"}
    return scorer
