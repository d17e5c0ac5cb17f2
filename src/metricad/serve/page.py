"""The operator's page (``GET /``) and the two views it reads besides the scoring API: the threshold over the good
images' scores (``GET /threshold``) and the line's recent scores (``GET /monitor``).

The page is one HTML file in the package (``static/page.html``: no build step, nothing fetched from elsewhere: the
line's PC may be offline). It is a client of the service's own endpoints (``/info``, ``/score``, ``/admin/...``),
never a second scorer.
"""

from __future__ import annotations

import asyncio
from importlib import resources

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from metricad.deploy.versions import corrections_dir, history
from metricad.serve.admin import LABELS, pending
from metricad.serve.service import Service, expected_rate, threshold_record, version_of

READ_RESPONSES = {401: {"description": "missing or wrong API key"}, 503: {"description": "the model is still loading"}}
MAX_LABELLED = 500  # marked images scored for the threshold view, newest kept


def page_html() -> str:
    return resources.files("metricad.serve").joinpath("static", "page.html").read_text(encoding="utf-8")


async def labelled_scores(service: Service, scorer) -> dict | None:
    """The scores of the images an operator marked and the service kept (defects, and good images not learned
    yet), scored now by ``scorer``; None when there are none."""
    from metricad.data.images import read_image

    if not service.has_path:
        return None
    marked = [(path, label == "defect") for label in ("defect", "good") for path in pending(service.target, label)]
    marked = marked[-MAX_LABELLED:]
    if not marked:
        return None
    channels, size = scorer.input_spec
    images = await asyncio.to_thread(lambda: [read_image(path, size, channels) for path, _ in marked])
    results = await asyncio.gather(*(service.batcher.submit(image, scorer) for image in images))
    return {"scores": [r.score for r in results], "is_anomaly": [flag for _, flag in marked],
            "images": f"marked on the page and kept in {corrections_dir(service.target)}"}


def add_page_routes(app: FastAPI, service: Service) -> None:
    @app.get("/", response_class=HTMLResponse, summary="the operator's page: score images, see their maps, set the "
             "threshold, mark corrections, watch the line",
             responses={401: {"description": "missing or wrong API key (a browser is asked for it)"},
                        403: {"description": "the page needs an API key beyond loopback"}})
    async def page():
        if service.api_key is None and not service.loopback:
            raise HTTPException(403, "the page needs an API key when the service listens beyond loopback: serve "
                                     "with METRICAD_API_KEY or --api-key-file")
        return HTMLResponse(page_html())

    @app.get("/threshold", summary="the threshold over the good images' scores it was set on, and the labelled "
             "images' scores: what moving it would do", responses=READ_RESPONSES)
    async def threshold():
        scorer = service.ready_scorer()
        normal = scorer.normal_scores() if hasattr(scorer, "normal_scores") else None
        record, target = threshold_record(scorer), service.target if service.has_path else None
        return {"model_id": scorer.model_id, "version": version_of(scorer), "threshold": scorer.offset_,
                "threshold_set_on": record, "rate": expected_rate(scorer),
                "normal": None if normal is None else {"scores": np.asarray(normal, float).tolist(),
                                                       "images": record.get("images", "good images")},
                "labelled": await labelled_scores(service, scorer),
                "pending": {label: len(pending(target, label)) for label in LABELS} if target else None,
                "history": history(target)[-20:] if target else []}

    @app.get("/monitor", summary="the last images' scores and the share flagged, beside the rate the threshold "
             "was set for", responses=READ_RESPONSES)
    async def monitor():
        scorer = service.ready_scorer()
        scores, flags = service.metrics.recent.snapshot()
        return {"window": service.metrics.recent.window, "seen": len(scores),
                "anomaly_rate": sum(flags) / len(flags) if flags else None, "expected_rate": expected_rate(scorer),
                "threshold": scorer.offset_, "scores": scores}
