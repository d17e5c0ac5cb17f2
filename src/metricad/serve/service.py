"""What the service's routes share (``Service``): the model being served, the micro-batcher that scores queued images,
the metrics and the line's recent scores, the limits and the API key; and how it switches to a new version of its
run or bundle without dropping a request.

A reload (``POST /admin/reload``, SIGHUP, or after a write from the page) loads the target again in a background
thread while the old model keeps scoring; the switch is one assignment. A request keeps the model it started with
(``MicroBatcher`` scores each batch model by model), so no response mixes versions; a version that fails to load
leaves the running one in place.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, HTTPException

import metricad
from metricad.deploy.scorer import load_scorer
from metricad.serve.batching import MicroBatcher
from metricad.serve.metrics import ServiceMetrics


@dataclass
class ServiceLimits:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 20 * 1024 * 1024
    max_files: int = 64
    max_pixels: int = 16_000_000  # 4000 x 4000: any camera frame, not a decompression bomb


class ReloadFailed(RuntimeError):
    """The new version did not load; the running one stays."""


def version_of(scorer) -> int:
    """The version of the run or bundle a scorer serves (``metricad.deploy.versions``; 1 for a scorer without)."""
    return int(getattr(scorer, "version", 1))


def threshold_record(scorer) -> dict:
    """How the served threshold was set (``threshold_set_on``), whatever kind of scorer serves."""
    record = getattr(scorer, "threshold_set_on_", None)
    return dict(record or scorer.describe().get("threshold_set_on") or {})


def expected_rate(scorer) -> float | None:
    """The false-alarm rate on good images the threshold was set for: its contamination or target rate; for a
    threshold set by hand, the share of the held-out good images above it."""
    record = threshold_record(scorer)
    for key in ("target_fpr", "contamination"):
        if record.get(key) is not None:
            return float(record[key])
    normal = scorer.normal_scores() if hasattr(scorer, "normal_scores") else None
    return None if normal is None or not len(normal) else float(np.mean(scorer.predict_scores(normal)))


class Service:
    def __init__(self, target, limits: ServiceLimits, device, runtime: str, scorer, threads: int,
                 api_key: str | None, window: int = 200, loopback: bool = True):
        self.target, self.limits, self.device, self.runtime = target, limits, device, runtime
        self.scorer, self.threads, self.api_key = scorer, threads, api_key
        self.loopback = loopback  # writes need the key when the service listens beyond loopback
        self.error: str | None = None
        self.batcher: MicroBatcher | None = None
        self.metrics = ServiceMetrics(window)
        self.reload_lock = asyncio.Lock()
        self.writing = False  # an update or a threshold being written (one at a time)
        self.reloads = 0

    @property
    def has_path(self) -> bool:
        """Whether it serves a run or bundle by its path (one that can be written and reloaded), not a given scorer."""
        return isinstance(self.target, (str, os.PathLike))

    def set_threads(self, scorer=None) -> None:  # in the scoring thread: torch's count is per thread for OpenMP
        scorer = scorer or self.scorer
        if hasattr(scorer, "set_threads"):
            scorer.set_threads(self.threads)

    def _describe_model(self) -> None:
        scorer = self.scorer
        self.metrics.model.info({"model_id": scorer.model_id, "metricad_version": metricad.__version__,
                                 "target": str(self.target), "version": str(version_of(scorer))})
        self.metrics.model_version.set(version_of(scorer))
        rate = expected_rate(scorer)
        self.metrics.expected_rate.set(float("nan") if rate is None else rate)

    def load(self) -> None:
        try:
            if self.scorer is None:
                self.scorer = load_scorer(self.target, self.device, self.runtime, self.threads)
            self.set_threads()
            self._describe_model()
        except Exception as exc:  # noqa: BLE001 - reported by /health instead of killing the server
            self.error = f"{type(exc).__name__}: {exc}"

    async def reload(self) -> dict:
        """Load the target again and switch to it; ``ReloadFailed`` (the old model still serving) if it fails."""
        if not self.has_path:
            raise ReloadFailed("this service was given a scorer object, not a run or bundle path: nothing to reload")
        async with self.reload_lock:
            old = self.ready_scorer()
            try:
                new = await asyncio.to_thread(load_scorer, self.target, self.device, self.runtime, self.threads)
                await self.batcher.in_scoring_thread(self.set_threads, new)
            except Exception as exc:  # noqa: BLE001 - any failure to load keeps the running version
                raise ReloadFailed(f"{self.target}: the new version did not load, version "
                                   f"{version_of(old)} keeps serving ({type(exc).__name__}: {exc})") from exc
            self.scorer = new  # requests already queued finish on the old model (MicroBatcher)
            self.reloads += 1
            self._describe_model()
            print(f"metricad serve: now serving version {version_of(new)} ({new.model_id}) of "
                  f"{self.target}", file=sys.stderr, flush=True)
            return {"model_id": new.model_id, "version": version_of(new), "threshold": new.offset_,
                    "previous": {"model_id": old.model_id, "version": version_of(old)}}

    def score_batch(self, batch, scorer):
        scores = scorer.score_samples(batch)
        flags = scorer.predict_scores(scores)
        self.metrics.batch_size.labels(scorer.model_id).observe(len(batch))
        self.metrics.scored.labels(scorer.model_id).inc(len(batch))
        self.metrics.flagged.labels(scorer.model_id).inc(int(flags.sum()))
        self.metrics.observe(scores, flags)
        return scores

    def ready_scorer(self):
        if self.error:
            raise HTTPException(503, f"the model failed to load: {self.error}")
        if self.scorer is None or self.batcher is None:
            raise HTTPException(503, "the model is still loading")
        return self.scorer

    def _on_sighup(self) -> None:
        async def reload():
            try:
                await self.reload()
            except (ReloadFailed, HTTPException) as exc:
                print(f"metricad serve: SIGHUP: {getattr(exc, 'detail', exc)}", file=sys.stderr, flush=True)

        asyncio.ensure_future(reload())

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):
        loading = asyncio.create_task(asyncio.to_thread(self.load))
        self.batcher = MicroBatcher(self.score_batch, self.limits.max_batch, self.limits.max_wait_ms,
                                    thread_setup=self.set_threads)
        await self.batcher.start()
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
        try:  # SIGHUP switches versions, as daemons reload their configuration; only the main thread may listen
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (RuntimeError, ValueError, NotImplementedError):
            pass
        yield
        loading.cancel()
        queued = self.batcher.depth
        await self.batcher.stop()  # scores and answers whatever is still queued
        print(f"metricad serve: stopped after answering every accepted request ({queued} image(s) were still "
              f"queued at shutdown; {self.batcher.batches_scored} batches scored)", file=sys.stderr, flush=True)
