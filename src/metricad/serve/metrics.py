"""The service's Prometheus metrics (prometheus-client), in a registry of the app's own so that several apps (tests,
embedding) never share counters; and the line's recent scores (``RecentScores``), which the page and
``metricad_anomaly_rate`` read to show drift."""

from __future__ import annotations

from collections import deque
from threading import Lock

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the app)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Scores are z-scores on good images (0: a typical good image; thresholds lie at about 2 to 6).
SCORE_BUCKETS = (-2, -1, 0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100)


class RecentScores:
    """The last ``window`` images' scores and decisions: the rolling anomaly rate a drift shows in."""

    def __init__(self, window: int = 200):
        if window < 1:
            raise ValueError(f"the window must hold at least 1 image, got {window}")
        self.window = window
        self._items: deque = deque(maxlen=window)
        self._lock = Lock()  # written from the scoring thread, read from the event loop

    def add(self, scores, flags) -> None:
        with self._lock:
            self._items.extend(zip(map(float, scores), map(bool, flags)))

    def snapshot(self) -> tuple[list[float], list[bool]]:
        with self._lock:
            items = list(self._items)
        return [s for s, _ in items], [f for _, f in items]

    def anomaly_rate(self) -> float:
        """The share of the last ``window`` images flagged (0 before any image)."""
        _, flags = self.snapshot()
        return sum(flags) / len(flags) if flags else 0.0


class ServiceMetrics:
    def __init__(self, window: int = 200):
        self.registry = CollectorRegistry()
        r = self.registry
        self.recent = RecentScores(window)
        self.scores = Histogram("metricad_score", "image anomaly scores (z-scores on good images)",
                                buckets=SCORE_BUCKETS, registry=r)
        self.anomaly_rate = Gauge("metricad_anomaly_rate", f"share of the last {window} images scored above the "
                                  "threshold", registry=r)
        self.anomaly_rate.set_function(self.recent.anomaly_rate)
        self.expected_rate = Gauge("metricad_threshold_rate", "the false-alarm rate the threshold was set for, on "
                                   "good images", registry=r)
        self.model_version = Gauge("metricad_model_version", "the version of the run or bundle being served",
                                   registry=r)
        self.requests = Counter("metricad_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("metricad_request_seconds", "request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("metricad_batch_size", "images per scored batch", ["model_id"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.scored = Counter("metricad_images_scored", "images scored", ["model_id"], registry=r)
        self.flagged = Counter("metricad_images_flagged", "images scored above the threshold (anomalous)",
                               ["model_id"], registry=r)
        self.queue_depth = Gauge("metricad_queue_depth",
                                 "images waiting to be scored: queued, or in the batch still gathering", registry=r)
        self.model = Info("metricad_model", "the model being served", registry=r)

    def observe(self, scores, flags) -> None:
        """Images scored: their scores into the histogram and the rolling window."""
        for score in scores:
            self.scores.observe(float(score))
        self.recent.add(scores, flags)

    def render(self) -> bytes:
        return generate_latest(self.registry)
