"""The service's Prometheus metrics (prometheus-client), in a registry of the app's own so that several apps (tests,
embedding) never share counters."""

from __future__ import annotations

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


class ServiceMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
