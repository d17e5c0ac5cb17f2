"""Reading uploads within the limits: the body (counted while reading, whatever Content-Length says) and the image
files in it (multipart parts, or one raw image)."""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

RAW_TYPES = ("image/", "application/octet-stream")
IMAGES_BODY = {"required": True, "description": "multipart files (any field name, repeatable) or one raw image",
              "content": {
                  "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
                      "files": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}}}},
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


async def read_body(request: Request, limit: int) -> bytes:
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


async def uploaded_images(request: Request, body: bytes, limits) -> list[tuple[str, bytes]]:
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
        if "Too many" in str(exc):  # starlette's own count, stopped at the limit while parsing
            raise HTTPException(413, f"more files in one request than the limit of {limits.max_files}") from exc
        raise HTTPException(400, f"malformed multipart body: {exc}") from exc
    files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
             if isinstance(value, UploadFile)]
    if not files:
        raise HTTPException(400, "no image file in the multipart body (send one or more file parts)")
    return files


async def request_images(request: Request, limits) -> list[tuple[str, bytes]]:
    """The request's image files, each ``(name, bytes)``, within ``limits`` (``ServiceLimits``): body size and
    number of files (413)."""
    files = await uploaded_images(request, await read_body(request, limits.max_body_bytes), limits)
    if len(files) > limits.max_files:
        raise HTTPException(413, f"{len(files)} files in one request: more than the limit of {limits.max_files}")
    return files
