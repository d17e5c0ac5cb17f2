"""The scoring service: ``POST /score``, ``GET /health``, ``GET /info``, ``GET /metrics`` (FastAPI on uvicorn), and
the operator's page with its views (``GET /``, ``/threshold``, ``/monitor``: ``metricad.serve.page``) and writes
(``/admin/...``: ``metricad.serve.admin``).

It serves a model bundle (``.onnx``, torch-free: the light install) or a run directory (the ``train`` extra). The
model is loaded in a background thread at start-up, so ``/health`` answers at once (503 until ready). Every
request is checked before any decoding: the API key (401, when one is configured; ``/health`` stays open; a
browser asking for the page is asked for it by HTTP Basic),
content type (415), body size (413, counted while reading, whatever Content-Length says), number of files (413),
then each image (400 unreadable, 413 too many pixels). A bad request never reaches the batch. On SIGTERM uvicorn
stops accepting connections and waits for the requests in flight; the batcher scores every image already queued
and answers it before the process exits.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse

import metricad
from metricad.localization import no_map_error
from metricad.serve.admin import add_admin_routes
from metricad.serve.auth import authorized, check_exposure, is_loopback
from metricad.serve.batching import ShuttingDown
from metricad.serve.decode import BadImage, decode_image
from metricad.serve.metrics import CONTENT_TYPE_LATEST
from metricad.serve.page import add_page_routes
from metricad.serve.service import Service, ServiceLimits, version_of
from metricad.serve.uploads import IMAGES_BODY, request_images

MAP_KINDS = ("png", "mask", "overlay")  # ?map=: the 16-bit map, the defect mask, the map over the image
OPEN_ROUTES = ("/health", "/docs", "/openapi.json", "/docs/oauth2-redirect")
PAGE_ROUTES = ("/",)  # a browser is asked for the key itself (HTTP Basic: any user name, the key as password)


def default_threads(max_batch: int) -> int:
    """Scoring threads. Batch by batch (``max_batch`` 1), all cores but one: the event loop (HTTP, decoding)
    needs one, and tiny parallel regions spin against it (seed-mobilenetv2 under 32 clients on 2 cores: 46
    images/s with 2 threads, 173 with 1). With batching, all cores: a batch's parallel regions are long."""
    cores = os.cpu_count() or 2
    return max(1, cores - 1) if max_batch == 1 else cores


def create_app(target, limits: ServiceLimits | None = None, device=None, runtime: str = "torch",
               scorer=None, threads: int | None = None, api_key: str | None = None, window: int = 200,
               loopback: bool = True) -> FastAPI:
    """The ASGI app serving ``target`` (a bundle or a run directory), or an already loaded ``scorer`` (tests,
    embedding). ``threads``: scoring threads (default ``default_threads``); ``api_key``: required from clients
    as ``Authorization: Bearer KEY`` (or HTTP Basic, the key as password) on every route but ``/health`` and the
    API docs; ``window``: the recent images the anomaly rate is taken over; ``loopback``: whether it listens on
    loopback only (beyond it, every write needs the key)."""
    limits = limits or ServiceLimits()
    service = Service(target, limits, device, runtime, scorer, threads or default_threads(limits.max_batch), api_key,
                      window, loopback)
    app = FastAPI(title="metricad", version=metricad.__version__, lifespan=service.lifespan,
                  description="Image anomaly scoring: each image's anomaly score (the mean of the model's experts, "
                              "each z-scored on normal images). Higher score = more anomalous; label 'anomaly' "
                              "when score > threshold.")
    _add_guard(app, service)
    _add_model_routes(app, service)
    _add_score_route(app, service)
    add_page_routes(app, service)
    add_admin_routes(app, service)
    return app


def _add_guard(app: FastAPI, service: Service) -> None:
    """The API key on every route but the open ones, and every request counted by its route and status."""
    @app.middleware("http")
    async def guard_and_count(request: Request, call_next):
        start = time.perf_counter()
        if request.url.path not in OPEN_ROUTES and not authorized(request.headers.get("authorization"),
                                                                  service.api_key):
            challenge = 'Basic realm="metricad"' if request.url.path in PAGE_ROUTES else "Bearer"
            response = Response('{"detail": "missing or wrong API key: send Authorization: Bearer KEY"}', 401,
                                {"WWW-Authenticate": challenge}, media_type="application/json")
        else:
            response = await call_next(request)
        # The route's template, not the raw path: a scan of random paths must not grow the label set.
        route = getattr(request.scope.get("route"), "path", None) or (
            request.url.path if request.url.path in {r.path for r in app.routes} else "unmatched")
        service.metrics.requests.labels(route, str(response.status_code)).inc()
        service.metrics.latency.labels(route).observe(time.perf_counter() - start)
        return response


def _add_model_routes(app: FastAPI, service: Service) -> None:
    @app.get("/health", summary="200 once the model is loaded and ready to score, 503 before")
    async def health():
        service.ready_scorer()
        return {"status": "ready"}

    @app.get("/info", summary="the model, its threshold, and the service's limits",
             responses={401: {"description": "missing or wrong API key"}})
    async def info():
        scorer = service.ready_scorer()
        channels, (height, width) = scorer.input_spec
        return {"metricad_version": metricad.__version__, "model_id": scorer.model_id, **scorer.describe(),
                "version": version_of(scorer), "input": {"channels": channels, "height": height,
                                                                      "width": width},
                "threshold": scorer.offset_, "limits": asdict(service.limits)}

    @app.get("/metrics", summary="Prometheus metrics: requests, latency, batch sizes, images scored and flagged",
             response_class=PlainTextResponse, responses={401: {"description": "missing or wrong API key"}})
    async def prometheus_metrics():
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


SCORE_RESPONSES = {400: {"description": "not a readable image, or no image"},
                   401: {"description": "missing or wrong API key"}, 413: {"description": "too large"},
                   415: {"description": "content type not accepted"},
                   503: {"description": "model not ready, or shutting down"}}


def _add_score_route(app: FastAPI, service: Service) -> None:
    limits = service.limits

    @app.post("/score", summary="score one or more images", openapi_extra={"requestBody": IMAGES_BODY},
              responses=SCORE_RESPONSES)
    async def score(request: Request, map: str | None = None):  # noqa: A002 - the query parameter's name
        start = time.perf_counter()
        scorer = service.ready_scorer()
        if map is not None and map not in MAP_KINDS:
            raise HTTPException(400, f"map={map!r}: ask for one of {', '.join(MAP_KINDS)}")
        if map is not None and not getattr(scorer, "has_map", False):
            raise HTTPException(400, str(no_map_error(scorer.score, f"map={map}: ")))
        files = await request_images(request, limits)
        if map is not None:
            if len(files) != 1:
                raise HTTPException(400, f"map={map} answers with one picture: send one image, not {len(files)}")
            return await _map_response(service, scorer, files[0], map, start)
        channels, size = scorer.input_spec
        try:
            images = [decode_image(data, size, channels, limits.max_pixels, name) for name, data in files]
            results = await asyncio.gather(*(service.batcher.submit(image, scorer) for image in images))
        except BadImage as exc:
            raise HTTPException(exc.status_code, str(exc)) from exc
        except ShuttingDown as exc:
            raise HTTPException(503, str(exc)) from exc
        flagged = scorer.predict_scores([r.score for r in results])
        return {"model_id": scorer.model_id, "version": version_of(scorer), "threshold": scorer.offset_,
                "request_ms": 1000 * (time.perf_counter() - start),
                "results": [{"name": name, "score": r.score, "label": "anomaly" if flag else "normal",
                             "batch_size": r.batch_size, "queue_ms": r.queue_ms, "score_ms": r.score_ms}
                            for (name, _), r, flag in zip(files, results, flagged)]}


async def _map_response(service: Service, scorer, file: tuple[str, bytes], kind: str, start: float) -> Response:
    """One image's map (16-bit PNG), defect mask or overlay at the file's resolution; the score in headers.
    Scored on its own, not in the micro-batch: a map request is one image and its picture."""
    name, data = file
    try:
        original = decode_image(data, None, scorer.input_spec[0], service.limits.max_pixels, name)  # its own size
    except BadImage as exc:
        raise HTTPException(exc.status_code, str(exc)) from exc
    png, score, flagged, defect = await asyncio.to_thread(map_picture, scorer, original, kind)
    service.metrics.scored.labels(scorer.model_id).inc()
    service.metrics.flagged.labels(scorer.model_id).inc(int(flagged))
    service.metrics.observe([score], [flagged])
    return Response(png, media_type="image/png", headers={
        "X-Metricad-Score": f"{score:.6f}", "X-Metricad-Label": "anomaly" if flagged else "normal",
        "X-Metricad-Threshold": f"{scorer.offset_:.6f}", "X-Metricad-Pixel-Threshold": f"{scorer.pixel_offset_:.6f}",
        "X-Metricad-Defect-Pixels": str(defect), "X-Metricad-Model-Id": scorer.model_id,
        "X-Metricad-Version": str(version_of(scorer)),
        "X-Metricad-Request-Ms": f"{1000 * (time.perf_counter() - start):.2f}"})


def map_picture(scorer, original, kind: str) -> tuple[bytes, float, bool, int]:
    """``(PNG bytes, score, flagged, defect pixels)`` of one decoded image (its own size): its map at that
    resolution as ``kind`` asks (``MAP_KINDS``)."""
    import io

    import numpy as np
    from PIL import Image

    from metricad.data.images import resized
    from metricad.localization import at_file_size, map_png, mask_png, overlay

    channels, size = scorer.input_spec
    scores, maps = scorer.score_with_maps(resized(original, size, channels)[None])
    full, mask = at_file_size(scorer, scores[0], maps[0], original.shape[-2:])
    if kind == "png":
        picture = map_png(full, scorer.pixel_offset_)
    elif kind == "mask":
        picture = mask_png(mask)
    else:
        picture = Image.fromarray(overlay(original if original.ndim == 2 else original.transpose(1, 2, 0), full,
                                          scorer.pixel_offset_, mask))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), float(scores[0]), bool(scorer.predict_scores(scores)[0]), int(np.sum(mask))


def serve(target, host: str = "127.0.0.1", port: int = 8000, limits: ServiceLimits | None = None, device=None,
          runtime: str = "torch", threads: int | None = None, api_key: str | None = None,
          insecure: bool = False, window: int = 200) -> None:
    """Serve until SIGINT/SIGTERM; then finish the requests in flight (uvicorn's graceful shutdown)."""
    import uvicorn

    check_exposure(host, api_key, insecure)
    if not Path(target).exists():
        raise FileNotFoundError(f"{target}: no such run directory or model bundle")
    app = create_app(target, limits, device, runtime, threads=threads, api_key=api_key, window=window,
                     loopback=is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["ServiceLimits", "create_app", "serve"]
