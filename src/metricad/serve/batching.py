"""Micro-batching: single images from many concurrent requests, scored together.

Each submitted image gets its own future, so results go back to their own request whatever batch they rode
in, and carries the model (``context``) its request started with: a batch is scored model by model, so a request
that began before the service switched versions is answered wholly by the version it began with. One worker task
forms a batch from what is queued (up to ``max_batch``), waits at most ``max_wait_ms`` after the first image for
more, and scores it in one background thread, so the event loop keeps accepting
requests meanwhile and two batches never run the model at once. ``stop`` refuses new images, scores every image
already queued and answers it, then ends the worker: a graceful shutdown loses no accepted image.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np


class ShuttingDown(RuntimeError):
    """An image submitted after ``stop`` began (HTTP 503)."""


@dataclass
class BatchResult:
    score: float
    batch_size: int
    queue_ms: float
    score_ms: float


class MicroBatcher:
    def __init__(self, score_batch: Callable[[np.ndarray, object], np.ndarray], max_batch: int = 32,
                 max_wait_ms: float = 5.0, thread_setup: Callable[[], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.score_batch, self.max_batch, self.max_wait = score_batch, max_batch, max_wait_ms / 1000
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        # thread_setup runs once in the scoring thread (e.g. torch's thread count, a per-thread setting of OpenMP).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metricad-score",
                                            initializer=thread_setup)
        self.batches_scored = 0
        self.closing = False
        self._gathering = 0  # images taken into the batch being gathered, not yet scoring

    @property
    def depth(self) -> int:
        """Images waiting to be scored: queued, or in the batch still gathering for its window."""
        return self._gathering + (0 if self._queue is None else self._queue.qsize())

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Refuse new images, score and answer every queued one, then stop the worker."""
        self.closing = True
        if self._worker is not None:
            await self._queue.join()  # every queued image taken and answered
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, image: np.ndarray, context=None) -> BatchResult:
        """Score ``image`` in the next batch, by ``score_batch(images, context)``."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if self.closing:
            raise ShuttingDown("the service is shutting down")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future, time.perf_counter(), context))
        return await future

    async def in_scoring_thread(self, function: Callable, *args):
        """Run ``function(*args)`` in the scoring thread, between batches (e.g. a new model's thread count)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _next_batch(self) -> list:
        batch = [await self._queue.get()]
        self._gathering = 1
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                self._gathering += 1
                continue
            timeout = deadline - asyncio.get_running_loop().time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                self._gathering += 1
            except asyncio.TimeoutError:
                break
        self._gathering = 0
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._score(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _score(self, batch: list) -> None:
        batch = [item for item in batch if not item[1].done()]  # a client that went away
        groups: dict[int, list] = {}
        for item in batch:  # one model per call: the images of requests that began on another version apart
            groups.setdefault(id(item[3]), []).append(item)
        for group in groups.values():
            await self._score_group(group)

    async def _score_group(self, batch: list) -> None:
        start = time.perf_counter()
        try:
            scores = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.score_batch, np.stack([item[0] for item in batch]), batch[0][3])
        except Exception as exc:  # noqa: BLE001 - the error goes back to every request of this batch
            for _, future, _, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        score_ms = 1000 * (time.perf_counter() - start)
        self.batches_scored += 1
        for (_, future, queued, _), score in zip(batch, scores):
            if not future.done():
                future.set_result(BatchResult(float(score), len(batch), 1000 * (start - queued), score_ms))
