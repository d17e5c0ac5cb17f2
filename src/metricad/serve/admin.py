"""The service's writes, ``/admin/...``: images an operator marks (``corrections``), a threshold applied, the good
corrections learned (``update``, a run only), and a switch to the newest version (``reload``).

Each needs the API key when the service has one (the guard in ``metricad.serve.app``); a service listening beyond
loopback without a key (``--insecure``) refuses every write. One write at a time (409 while another runs). Every
write is a new version of the run or bundle (``metricad.deploy.versions``: atomic, the old one kept, who and what
recorded), and the service switches to it between batches; a version that fails to load leaves the running one.
Images the service keeps are named by the service (the SHA-256 of their pixels), never by the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from metricad.deploy.scorer import is_bundle
from metricad.deploy.versions import apply_threshold, corrections_dir
from metricad.files import atomic_write
from metricad.serve.auth import user_name
from metricad.serve.decode import BadImage, decode_image
from metricad.serve.service import ReloadFailed, Service
from metricad.serve.uploads import IMAGES_BODY, request_images

WRITE_RESPONSES = {400: {"description": "a change that cannot be made, with why"},
                   401: {"description": "missing or wrong API key"},
                   403: {"description": "writes need an API key beyond loopback"},
                   409: {"description": "another change is being written"},
                   500: {"description": "the new version did not load: the running one keeps serving"},
                   503: {"description": "the model is still loading"}}
UPLOAD_RESPONSES = WRITE_RESPONSES | {413: {"description": "too large"},
                                      415: {"description": "content type not accepted"}}
LABELS = ("good", "defect")  # good: learned by the next update; defect: kept as validation, never learned
LEARNED = "learned"


class ThresholdChange(BaseModel):
    threshold: float = Field(strict=True, allow_inf_nan=False,
                             description="the new image threshold: anomaly when score > threshold")
    by: str | None = Field(None, max_length=100,
                           description="who makes the change (recorded); default: the Basic user name")


def who(request: Request, given: str | None = None) -> str:
    """Who makes a change, as recorded: the name given, else the browser's user name, else the client's address."""
    host = request.client.host if request.client else "unknown"
    return given or user_name(request.headers.get("authorization")) or f"client {host}"


def write_target(service: Service) -> Path:
    """The run or bundle a write changes; refused when writes are not safe or there is no file to write."""
    if service.api_key is None and not service.loopback:
        raise HTTPException(403, "writes need an API key when the service listens beyond loopback: serve with "
                                 "METRICAD_API_KEY or --api-key-file")
    if not service.has_path:
        raise HTTPException(400, "this service was given a scorer object, not a run or bundle: nothing to write")
    service.ready_scorer()  # 503 before the model is loaded: nothing is written that could not be served
    return Path(service.target)


@asynccontextmanager
async def one_writer(service: Service):
    if service.writing:
        raise HTTPException(409, "another change is being written: try again when it is done")
    service.writing = True
    try:
        yield
    finally:
        service.writing = False


async def switch(service: Service) -> dict:
    try:
        return await service.reload()
    except ReloadFailed as exc:
        raise HTTPException(500, str(exc)) from exc


def store_image(directory: Path, image) -> Path:
    """Keep ``image`` (decoded pixels) as a PNG named by the SHA-256 of its pixels: a client's name never
    reaches the file system, and the same image marked twice is kept once."""
    from PIL import Image

    array = image if image.ndim == 2 else image.transpose(1, 2, 0)
    path = directory / f"{hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()[:20]}.png"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
    return path


def pending(target, label: str) -> list[Path]:
    """The images marked ``label`` and not learned yet."""
    return sorted((corrections_dir(target) / label).glob("*.png"))


async def learn_marked_good(service: Service, by: str) -> dict:
    """Teach the run the images marked good (``metricad.deploy.update``), keep them under ``learned/v<N>/``,
    and serve the new version."""
    target = write_target(service)
    if is_bundle(target):
        raise HTTPException(400, f"{target.name}: a model bundle holds no images and no training stack to learn "
                                 "with: serve its run, or run metricad update RUN --add-good DIR and export")
    good = pending(target, "good")
    if not good:
        raise HTTPException(400, "no image is marked good and waiting to be learned: mark some first "
                                 "(POST /admin/corrections?label=good)")
    from metricad.deploy.update import update_run

    async with one_writer(service):
        try:
            summary = await asyncio.to_thread(update_run, target, [str(p) for p in good], by, service.device)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        learned = corrections_dir(target) / LEARNED / f"v{summary['version']}"
        learned.mkdir(parents=True, exist_ok=True)
        for path in good:
            shutil.move(path, learned / path.name)
        return summary | {"serving": await switch(service)}


def add_admin_routes(app: FastAPI, service: Service) -> None:
    @app.post("/admin/reload", summary="switch to the newest version of the run or bundle, between batches",
              responses=WRITE_RESPONSES)
    async def reload():
        write_target(service)
        return await switch(service)

    @app.post("/admin/threshold", summary="apply a new image threshold: a new version, then served",
              responses=WRITE_RESPONSES)
    async def threshold(change: ThresholdChange, request: Request):
        target = write_target(service)
        async with one_writer(service):
            try:
                version = await asyncio.to_thread(apply_threshold, target, change.threshold, who(request, change.by))
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from exc
            return {"written": version, "serving": await switch(service)}

    @app.post("/admin/corrections", summary="keep images an operator marked: label=good (learned by the next "
              "update) or label=defect (kept as validation, never learned)", responses=UPLOAD_RESPONSES,
              openapi_extra={"requestBody": IMAGES_BODY})
    async def corrections(request: Request, label: str):
        target = write_target(service)
        if label not in LABELS:
            raise HTTPException(400, f"label={label!r}: mark images {' or '.join(LABELS)}")
        channels = service.ready_scorer().input_spec[0]
        files = await request_images(request, service.limits)
        try:
            images = [decode_image(data, None, channels, service.limits.max_pixels, name) for name, data in files]
        except BadImage as exc:
            raise HTTPException(exc.status_code, str(exc)) from exc
        directory = corrections_dir(target) / label
        stored = [store_image(directory, image) for image in images]
        return {"label": label, "stored": [{"name": name, "as": f"{label}/{path.name}"}
                                           for (name, _), path in zip(files, stored)],
                "pending": {name: len(pending(target, name)) for name in LABELS}}

    @app.post("/admin/update", summary="learn the images marked good (a run: no training), set the thresholds "
              "again on held-out good images, write a new version and serve it", responses=WRITE_RESPONSES)
    async def update(request: Request):
        return await learn_marked_good(service, who(request))
