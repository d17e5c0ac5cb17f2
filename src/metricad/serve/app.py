"""The scoring service: ``POST /score``, ``GET /health``, ``GET /info`` (FastAPI on uvicorn).

The run is loaded in a background thread at start-up, so ``/health`` answers at once (503 until ready). Every
request is checked before any decoding: content type (415), body size (413, counted while reading, whatever
Content-Length says), number of files (413), then each image (400 unreadable, 413 too many pixels). A bad
request never reaches the batch, so it cannot hurt the other requests.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Request
from starlette.datastructures import UploadFile

import metricad
from metricad.run import model_id, open_run
from metricad.serve.batching import MicroBatcher
from metricad.serve.decode import BadImage, decode_image

RAW_TYPES = ("image/", "application/octet-stream")


def default_threads(max_batch: int) -> int:
    """Torch threads for scoring. Batch by batch (``max_batch`` 1), all cores but one: the event loop (HTTP,
    decoding) needs one, and tiny parallel regions spin against it (seed-mobilenetv2 under 32 clients on 2 cores:
    46 images/s with 2 threads, 173 with 1). With batching, all cores: a batch's parallel regions are long
    (313 images/s with 2 threads, 266 with 1)."""
    cores = os.cpu_count() or 2
    return max(1, cores - 1) if max_batch == 1 else cores


@dataclass
class ServiceLimits:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 20 * 1024 * 1024
    max_files: int = 64
    max_pixels: int = 16_000_000  # 4000 x 4000: any camera frame, not a decompression bomb


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploaded_images(request: Request, body: bytes, limits: ServiceLimits) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each image in the request: multipart files, or the raw body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(RAW_TYPES):
        return [("body", body)]
    if not content_type.startswith("multipart/form-data"):
        raise HTTPException(415, f"content type {content_type or '(none)'!r} is not accepted: send "
                                 "multipart/form-data files or one raw image (image/png, image/jpeg, "
                                 "application/octet-stream)")

    async def replay():  # starlette parses multipart from a receive channel: give it the body already read
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=limits.max_files, max_fields=limits.max_files)
    except Exception as exc:  # noqa: BLE001 - malformed multipart raises several types; all are the client's
        too_many = "Too many" in str(exc)
        raise HTTPException(413 if too_many else 400, f"malformed multipart body: {exc}") from exc
    files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
             if isinstance(value, UploadFile)]
    if not files:
        raise HTTPException(400, "no image file in the multipart body (send one or more file parts)")
    return files


def create_app(run_dir, limits: ServiceLimits | None = None, device=None, runtime: str = "torch",
               detector=None, threads: int | None = None) -> FastAPI:
    """The ASGI app serving ``run_dir`` (or an already loaded ``detector``, for tests and embedding).

    ``threads``: torch's intra-op threads for scoring (default ``default_threads(limits.max_batch)``)."""
    run_dir, limits = Path(run_dir), limits or ServiceLimits()
    state: dict = {"detector": detector, "error": None}

    def set_threads() -> None:
        torch.set_num_threads(threads or default_threads(limits.max_batch))

    def load() -> None:
        set_threads()
        try:
            state["model_id"] = model_id(run_dir)
            if state["detector"] is None:
                state["detector"] = open_run(run_dir, device=device, runtime=runtime).detector
        except Exception as exc:  # noqa: BLE001 - reported by /health instead of killing the server
            state["error"] = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(asyncio.to_thread(load))
        batcher = MicroBatcher(lambda batch: state["detector"].score_samples(batch), limits.max_batch,
                               limits.max_wait_ms, thread_setup=set_threads)
        await batcher.start()
        state["batcher"] = batcher
        yield
        loading.cancel()
        await batcher.stop()

    app = FastAPI(title="metricad", version=metricad.__version__, lifespan=lifespan,
                  description="Image anomaly scoring: each image's anomaly score (the mean of the run's experts, "
                              "each z-scored on normal images). Higher score = more anomalous; label 'anomaly' "
                              "when score > threshold.")

    def ready_detector():
        if state["error"]:
            raise HTTPException(503, f"the model failed to load: {state['error']}")
        if state["detector"] is None or "model_id" not in state:
            raise HTTPException(503, "the model is still loading")
        return state["detector"]

    @app.get("/health", summary="200 once the model is loaded and ready to score, 503 before")
    async def health():
        ready_detector()
        return {"status": "ready"}

    @app.get("/info", summary="the model, its anchors and threshold, and the service's limits")
    async def info():
        detector = ready_detector()
        channels, (height, width) = detector.input_spec
        return {"metricad_version": metricad.__version__, "run": str(run_dir), "model_id": state["model_id"],
                "models": [model.metricad_config for model in detector.models], "score": detector.score,
                "input": {"channels": channels, "height": height, "width": width},
                "anchors": len(detector.anchor_indices_), "k": detector.k, "threshold": detector.offset_,
                "runtime": detector.runtime, "limits": asdict(limits)}

    @app.post("/score", summary="score one or more images", openapi_extra={"requestBody": {
        "required": True, "description": "multipart files (any field name, repeatable) or one raw image",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
                "files": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}}}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
        responses={400: {"description": "not a readable image, or no image"}, 413: {"description": "too large"},
                   415: {"description": "content type not accepted"}, 503: {"description": "model not ready"}})
    async def score(request: Request):
        start = time.perf_counter()
        detector = ready_detector()
        body = await _read_body(request, limits.max_body_bytes)
        files = await _uploaded_images(request, body, limits)
        if len(files) > limits.max_files:
            raise HTTPException(413, f"{len(files)} files in one request, the limit is {limits.max_files}")
        channels, size = detector.input_spec
        try:
            images = [decode_image(data, size, channels, limits.max_pixels, name) for name, data in files]
        except BadImage as exc:
            raise HTTPException(exc.status_code, str(exc)) from exc
        results = await asyncio.gather(*(state["batcher"].submit(image) for image in images))
        flagged = detector.predict_scores([r.score for r in results])
        return {"model_id": state["model_id"], "threshold": detector.offset_,
                "request_ms": 1000 * (time.perf_counter() - start),
                "results": [{"name": name, "score": r.score, "label": "anomaly" if flag else "normal",
                             "batch_size": r.batch_size, "queue_ms": r.queue_ms, "score_ms": r.score_ms}
                            for (name, _), r, flag in zip(files, results, flagged)]}

    return app


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, limits: ServiceLimits | None = None,
          device=None, runtime: str = "torch", threads: int | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(run_dir, limits, device, runtime, threads=threads), host=host, port=port,
                log_level="warning")


__all__ = ["ServiceLimits", "create_app", "model_id", "serve"]
