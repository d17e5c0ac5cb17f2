import asyncio
import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from metricad.run import open_run
from metricad.serve import BadImage, ImageTooLarge, MicroBatcher, ServiceLimits, create_app, decode_image


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_announcing(width: int, height: int) -> bytes:
    """A valid PNG header (with correct CRC) announcing ``width x height``: a decompression bomb's signature."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + png_bytes(np.zeros((1, 1), np.uint8))[33:])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def client(trained_run):
    limits = ServiceLimits(max_batch=8, max_wait_ms=20, max_body_bytes=200_000, max_files=4, max_pixels=1_000_000)
    with TestClient(create_app(trained_run, limits, device="cpu")) as test_client:
        for _ in range(200):  # the model loads in the background; /health says when it is ready
            if test_client.get("/health").status_code == 200:
                break
            time.sleep(0.05)
        yield test_client


def test_health_info_and_openapi(client, trained_run):
    assert client.get("/health").json() == {"status": "ready"}
    info = client.get("/info").json()
    assert info["anchors"] > 0 and info["input"] == {"channels": 1, "height": 28, "width": 28}
    assert len(info["model_id"]) == 12 and info["limits"]["max_files"] == 4
    assert info["threshold"] == pytest.approx(open_run(trained_run).detector.offset_)
    assert "/score" in client.get("/openapi.json").json()["paths"]


def test_scores_match_the_detector_in_request_order(client, trained_run, images):
    expected = open_run(trained_run, device="cpu").detector.score_samples(images)
    files = [("files", (f"img{i}.png", png_bytes(img), "image/png")) for i, img in enumerate(images[:4])]
    body = client.post("/score", files=files).json()
    assert [r["name"] for r in body["results"]] == ["img0.png", "img1.png", "img2.png", "img3.png"]
    np.testing.assert_allclose([r["score"] for r in body["results"]], expected[:4], rtol=1e-5, atol=1e-6)
    for r in body["results"]:
        assert r["label"] == ("anomaly" if r["score"] > body["threshold"] else "normal")
    raw = client.post("/score", content=png_bytes(images[5]), headers={"content-type": "image/png"}).json()
    assert raw["results"][0]["score"] == pytest.approx(expected[5], rel=1e-5, abs=1e-6)


def test_concurrent_requests_are_batched_without_mixing_results(client, trained_run, images):
    expected = open_run(trained_run, device="cpu").detector.score_samples(images)

    def one(i):
        r = client.post("/score", content=png_bytes(images[i % 6]), headers={"content-type": "image/png"})
        return i % 6, r.json()["results"][0]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(48)))
    for i, result in results:
        assert result["score"] == pytest.approx(expected[i], rel=1e-5, abs=1e-6)
    assert max(result["batch_size"] for _, result in results) > 1


BAD_REQUESTS = {
    "not an image": (400, dict(content=b"hello, I am text", headers={"content-type": "image/png"})),
    "truncated png": (400, "truncated"),
    "zero bytes": (400, dict(content=b"", headers={"content-type": "image/png"})),
    "decompression bomb": (413, dict(content=png_announcing(60000, 60000), headers={"content-type": "image/png"})),
    "wrong content type": (415, dict(content=b"{}", headers={"content-type": "application/json"})),
    "no content type": (415, dict(content=b"abc")),
    "body too large": (413, dict(content=b"\0" * 300_000, headers={"content-type": "image/png"})),
    "too many files": (413, "many"),
    "multipart without files": (400, dict(
        content=b'--x\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--x--\r\n',
        headers={"content-type": "multipart/form-data; boundary=x"})),
    "malformed multipart": (400, dict(content=b"--x\r\ngarbage",
                                      headers={"content-type": "multipart/form-data; boundary=x"})),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_gets_a_4xx_and_the_service_keeps_serving(client, images, case):
    status, kwargs = BAD_REQUESTS[case]
    if kwargs == "truncated":
        kwargs = dict(content=png_bytes(images[0])[:60], headers={"content-type": "image/png"})
    elif kwargs == "many":
        kwargs = dict(files=[("files", (f"{i}.png", png_bytes(images[0]), "image/png")) for i in range(5)])
    response = client.post("/score", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["detail"]  # a message, not an empty error
    good = client.post("/score", content=png_bytes(images[0]), headers={"content-type": "image/png"})
    assert good.status_code == 200


def test_health_is_503_until_the_model_is_loaded(trained_run):
    app = create_app(trained_run / "missing-run", device="cpu")
    with TestClient(app) as test_client:
        for _ in range(100):
            response = test_client.get("/health")
            if "failed" in response.text:
                break
            time.sleep(0.05)
        assert response.status_code == 503 and "failed to load" in response.json()["detail"]
        assert test_client.post("/score", content=b"x", headers={"content-type": "image/png"}).status_code == 503


def test_micro_batcher_returns_each_result_to_its_submitter():
    seen_batches = []

    def score(batch, context):
        seen_batches.append(len(batch))
        time.sleep(0.01)
        return batch.reshape(len(batch), -1).sum(1)

    async def run():
        batcher = MicroBatcher(score, max_batch=5, max_wait_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(np.full((2, 2), i)) for i in range(23)))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    assert [r.score for r in results] == [4 * i for i in range(23)]
    assert max(seen_batches) == 5 and sum(seen_batches) == 23  # batched, never over max_batch


def test_micro_batcher_scores_each_model_apart_within_a_batch():
    """Images submitted for two models (a request that began before a version switch, and one after) may share a
    gathering window but never one call: each is scored by its own model."""
    calls = []

    def score(batch, model):
        calls.append((model, len(batch)))
        return batch.reshape(len(batch), -1).sum(1) * (1 if model == "old" else -1)

    async def run():
        batcher = MicroBatcher(score, max_batch=16, max_wait_ms=50)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(np.full((2, 2), i), "old" if i % 3 else "new")
                                          for i in range(12)))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    assert [r.score for r in results] == [4 * i if i % 3 else -4 * i for i in range(12)]
    assert sorted(calls) == [("new", 4), ("old", 8)]  # one gathering window, two calls


def test_decode_rejects_bombs_before_decoding():
    with pytest.raises(ImageTooLarge, match="bomb.png: 5000x5000 pixels is more than the limit of 1000000"):
        decode_image(png_announcing(5000, 5000), (28, 28), 1, max_pixels=1_000_000, name="bomb.png")
    with pytest.raises(ImageTooLarge, match="bomb.png: too many pixels"):  # Pillow's own guard, above any limit
        decode_image(png_announcing(60000, 60000), (28, 28), 1, max_pixels=10**10, name="bomb.png")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000), cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_decode_fuzz_only_ever_raises_bad_image(data, cut, flip):
    """Random bytes, and a real PNG/JPEG truncated and bit-flipped at random places: decode or BadImage."""
    rng = np.random.default_rng(len(data))
    base = bytearray(png_bytes(rng.integers(0, 256, (20, 20), dtype=np.uint8)))
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
    for candidate in (data, bytes(base[:len(base) - cut]), jpeg.getvalue()[:len(jpeg.getvalue()) - cut]):
        candidate = bytearray(candidate)
        if candidate:
            candidate[flip % len(candidate)] ^= 0xFF
        try:
            out = decode_image(bytes(candidate), (28, 28), 1, max_pixels=1_000_000)
        except BadImage:
            continue
        assert out.shape == (28, 28) and out.dtype == np.uint8


def test_schemathesis_fuzz_of_the_live_service_finds_no_server_error(trained_run, tmp_path):
    """A short version of benchmarks/fuzz_service.sh: the real server on loopback, fuzzed from its OpenAPI."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from tests.serve.helpers import free_port, start_service

    run = shutil.copytree(trained_run, tmp_path / "run")  # the fuzzer writes too: thresholds, corrections
    port = free_port()
    server = start_service([sys.executable, "-m", "metricad", "serve", str(run), "--port", str(port),
                            "--device", "cpu"], port)
    try:
        result = subprocess.run([str(Path(sys.executable).parent / "st"), "run",
                                 f"http://127.0.0.1:{port}/openapi.json", "--checks", "all", "--exclude-checks",
                                 "positive_data_acceptance", "--max-examples", "40", "--generation-deterministic",
                                 "--request-timeout", "30"], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:]
        assert "passed" in result.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)


def _metric(text: str, name: str) -> float:
    """The value of one sample line (name with its labels) in Prometheus' text format."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{") and line.split(" ")[0] == name)


def test_metrics_count_requests_images_flags_and_batches(trained_run, images):
    from metricad.serve.app import create_app as make

    with TestClient(make(trained_run, ServiceLimits(max_batch=8, max_wait_ms=5), device="cpu")) as c:
        while c.get("/health").status_code != 200:
            time.sleep(0.05)
        files = [("files", (f"{i}.png", png_bytes(img), "image/png")) for i, img in enumerate(images[:3])]
        results = c.post("/score", files=files).json()
        c.post("/score", content=b"nope", headers={"content-type": "image/png"})
        text = c.get("/metrics").text
    model = results["model_id"]
    flagged = sum(r["label"] == "anomaly" for r in results["results"])
    assert _metric(text, f'metricad_images_scored_total{{model_id="{model}"}}') == 3
    assert _metric(text, f'metricad_images_flagged_total{{model_id="{model}"}}') == flagged
    assert _metric(text, 'metricad_requests_total{route="/score",status="200"}') == 1
    assert _metric(text, 'metricad_requests_total{route="/score",status="400"}') == 1
    assert _metric(text, 'metricad_request_seconds_count{route="/score"}') == 2
    assert _metric(text, f'metricad_batch_size_sum{{model_id="{model}"}}') == 3  # three images, however batched
    assert _metric(text, "metricad_queue_depth") == 0 and f'model_id="{model}"' in text  # metricad_model_info


def test_an_api_key_guards_everything_but_health(trained_run, images):
    with TestClient(create_app(trained_run, device="cpu", api_key="s3cret")) as c:
        while c.get("/health").status_code != 200:  # open, without a key
            time.sleep(0.05)
        png = {"content": png_bytes(images[0]), "headers": {"content-type": "image/png"}}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}):
            for response in (c.post("/score", **png | {"headers": png["headers"] | headers}),
                             c.get("/metrics", headers=headers), c.get("/info", headers=headers)):
                assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/score", **png | {"headers": png["headers"] | ok}).status_code == 200
        assert c.get("/metrics", headers=ok).status_code == 200 and c.get("/info", headers=ok).status_code == 200


def test_the_key_comes_from_the_environment_or_a_file_and_exposure_needs_one(tmp_path, monkeypatch, capsys):
    from metricad.cli import main
    from metricad.serve.auth import check_exposure, read_api_key

    monkeypatch.delenv("METRICAD_API_KEY", raising=False)
    assert read_api_key() is None
    monkeypatch.setenv("METRICAD_API_KEY", "from-env")
    assert read_api_key() == "from-env"
    (tmp_path / "key").write_text("from-file\n")
    assert read_api_key(tmp_path / "key") == "from-file"  # the file wins, its line stripped
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_api_key(tmp_path / "empty")
    for host in ("127.0.0.1", "::1", "localhost"):
        check_exposure(host, None, insecure=False)
    check_exposure("0.0.0.0", "key", insecure=False)
    check_exposure("0.0.0.0", None, insecure=True)
    monkeypatch.delenv("METRICAD_API_KEY")
    assert main(["serve", str(tmp_path / "any.onnx"), "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 without an API key" in capsys.readouterr().err


def test_sigterm_answers_every_request_already_accepted(trained_run, images, tmp_path):
    """Requests wait in the batcher (a batch window longer than the test) when SIGTERM arrives: each still gets
    its score, from the one batch that shutdown scores."""
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    from tests.serve.helpers import free_port, start_service

    port = free_port()
    server = start_service([sys.executable, "-m", "metricad", "serve", str(trained_run), "--port", str(port),
                            "--device", "cpu", "--max-batch", "64", "--max-wait-ms", "10000"], port,
                           stderr=subprocess.PIPE, text=True)

    def post(i):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=png_bytes(images[i % 6]),
                                         headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())["results"][0]["score"]

    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(post, i) for i in range(8)]
        # SIGTERM once all eight images wait in the batch being gathered (its window is 10 s): they are answered
        # from that one batch. On a machine too slow to send eight requests in 10 s this fails, it cannot pass.
        queued = f"http://127.0.0.1:{port}/metrics"
        for _ in range(1200):
            if _metric(urllib.request.urlopen(queued, timeout=10).read().decode(), "metricad_queue_depth") == 8:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the eight images never were all in the queue")
        server.send_signal(signal.SIGTERM)
        answers = [future.result() for future in pending]
    assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    expected = open_run(trained_run, device="cpu").detector.score_samples(images)
    for i, (status, score) in enumerate(answers):
        assert status == 200 and score == pytest.approx(expected[i % 6], rel=1e-5, abs=1e-6)
    # uvicorn waited for the eight requests; the batcher scored them in one batch when it stopped.
    assert "stopped after answering every accepted request" in (log := server.stderr.read())
    assert "1 batches scored" in log
