"""The service's limits as the command line sets them (a real server on loopback), the body limit of a chunked
request that announces no length, and the two 503 states: still loading, and shutting down. Each state is held
by an event the test controls, not reached by sleeping."""

import asyncio
import http.client
import io
import json
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from metricad.serve import ServiceLimits, create_app
from tests.serve.helpers import free_port, start_service

KEY = "line-3-key"


def png(side: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    body = b"".join(b"--bb\r\nContent-Disposition: form-data; name=\"files\"; filename=\"%d.png\"\r\n"
                    b"Content-Type: image/png\r\n\r\n%s\r\n" % (i, part) for i, part in enumerate(parts))
    return body + b"--bb--\r\n", "multipart/form-data; boundary=bb"


@pytest.fixture(scope="module")
def service(trained_run, tmp_path_factory):
    """``metricad serve`` with every limit set small from the command line and the key read from a file."""
    key_file = tmp_path_factory.mktemp("key") / "key"
    key_file.write_text(KEY + "\n")
    port = free_port()
    server = start_service([sys.executable, "-m", "metricad", "serve", str(trained_run), "--port", str(port),
                            "--device", "cpu", "--max-body-mb", "0.01", "--max-files", "2", "--max-pixels", "1000",
                            "--api-key-file", str(key_file)], port)
    yield port
    server.terminate()
    server.wait(timeout=60)


def request(port, path, body=None, content_type="image/png", key=KEY):
    headers = {"Content-Type": content_type} | ({"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                                           headers=headers), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_command_line_sets_each_limit_and_the_key(service):
    status, body = request(service, "/info")
    assert status == 200
    assert json.loads(body)["limits"] == {"max_batch": 32, "max_wait_ms": 5.0, "max_body_bytes": 10485,
                                               "max_files": 2, "max_pixels": 1000}
    assert request(service, "/score", png(28))[0] == 200  # 784 pixels, 2 files, under 10 kB: within every limit
    status, body = request(service, "/score", png(28), key=None)
    assert status == 401  # --api-key-file: the key is required
    assert request(service, "/score", png(28), key="wrong")[0] == 401
    status, body = request(service, "/score", png(32))  # 1024 pixels > --max-pixels 1000
    assert status == 413 and b"more than the limit of 1000" in body
    status, body = request(service, "/score", *multipart([png(28, i) for i in range(3)]))
    assert status == 413 and b"more files in one request than the limit of 2" in body  # --max-files
    status, body = request(service, "/score", png(120))  # a 14 kB PNG > --max-body-mb 0.01
    assert len(png(120)) > 10485 and status == 413 and b"over the limit of 10485 bytes" in body


def test_the_api_docs_stay_open_when_a_key_is_set(service):
    for path in ("/docs", "/openapi.json", "/health"):
        assert request(service, path, key=None)[0] == 200, path
    for path in ("/info", "/metrics"):
        assert request(service, path, key=None)[0] == 401, path


def test_a_chunked_body_without_a_length_is_cut_at_the_limit(service):
    connection = http.client.HTTPConnection("127.0.0.1", service, timeout=30)
    chunks = (b"\x00" * 1000 for _ in range(50))  # 50 kB in 1 kB chunks, no Content-Length
    connection.request("POST", "/score", body=chunks, encode_chunked=True,
                       headers={"Content-Type": "image/png", "Authorization": f"Bearer {KEY}"})
    response = connection.getresponse()
    assert response.status == 413 and b"over the limit of 10485 bytes" in response.read()
    connection.close()


def test_503_while_the_model_is_still_loading(trained_run, monkeypatch):
    import metricad.serve.service as app_module

    release = threading.Event()
    real = app_module.load_scorer

    def slow_load(*args, **kwargs):
        release.wait(timeout=120)
        return real(*args, **kwargs)

    monkeypatch.setattr(app_module, "load_scorer", slow_load)
    with TestClient(create_app(trained_run, device="cpu")) as client:
        response = client.get("/health")
        assert response.status_code == 503 and "still loading" in response.json()["detail"]
        scored = client.post("/score", content=png(28), headers={"content-type": "image/png"})
        assert scored.status_code == 503 and "still loading" in scored.json()["detail"]
        release.set()
        for _ in range(600):  # now it loads: /health turns 200
            if client.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.post("/score", content=png(28), headers={"content-type": "image/png"}).status_code == 200


def test_503_for_an_image_that_arrives_while_shutting_down(trained_run):
    """A request whose body is still arriving when the service shuts down: the batcher has stopped, so the image
    is answered 503 ("shutting down"), never dropped or left hanging."""
    import httpx

    from metricad.deploy.scorer import load_scorer

    app = create_app(trained_run, ServiceLimits(max_wait_ms=1), scorer=load_scorer(trained_run, "cpu"))

    async def scenario():
        body_started, finish_body = asyncio.Event(), asyncio.Event()

        async def slow_body():
            data = png(28)
            yield data[:10]
            body_started.set()
            await finish_body.wait()  # held until the service has shut down
            yield data[10:]

        async with app.router.lifespan_context(app):
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")
            pending = asyncio.create_task(client.post("/score", content=slow_body(),
                                                      headers={"content-type": "image/png"}))
            await body_started.wait()
        finish_body.set()  # the lifespan has ended: the batcher stopped
        response = await pending
        await client.aclose()
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 503 and "shutting down" in response.json()["detail"]
