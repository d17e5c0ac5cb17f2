"""A bounded load test on loopback while the service switches versions: 16 clients send 320 requests of four
images each while the run's version flips between two (which score the same image 51 and -21) and the service
reloads every few tens of milliseconds; no request is lost, and every response is scored wholly by the version it
names. SIGHUP switches to a version written meanwhile, as ``POST /admin/reload`` does."""

import os
import signal
import sys
import threading
import time
import urllib.request

import httpx
import numpy as np
import pytest

from metricad.cli import main
from metricad.data import load_images
from metricad.files import write_text
from metricad.layout import Layout
from metricad.run import open_run
from tests.conftest import write_new_look
from tests.serve.helpers import free_port, start_service

CLIENTS, REQUESTS = 16, 20


def _expected(run, config_text, paths):
    write_text(Layout(run).config, config_text)
    detector = open_run(run, device="cpu").detector
    return detector.score_samples(load_images(paths, detector.input_spec[1], 1)[1])


def _client(port, files, answers):
    with httpx.Client(timeout=60) as client:
        for _ in range(REQUESTS):
            response = client.post(f"http://127.0.0.1:{port}/score", files=files)
            answers.append((response.status_code, response.json()))


def _info_version(port) -> int:
    import json

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as response:
        return json.loads(response.read())["version"]


def test_no_request_is_lost_and_no_response_mixes_versions_during_reloads(writable_patch_run, tmp_path):
    run, data = writable_patch_run
    look = write_new_look(tmp_path / "looks", n=1)[0]
    spot, good = sorted((data / "test" / "spot").glob("*.png"))[0], data / "test" / "good" / "000.png"
    first = Layout(run).config.read_text()
    assert main(["update", str(run), "--add-good", str(look)]) == 0
    second = Layout(run).config.read_text()
    paths = [look, spot, look, good]
    expected = {1: _expected(run, first, paths), 2: _expected(run, second, paths)}
    assert expected[1][0] - expected[2][0] > 10  # the two versions tell apart on the learned image
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    port = free_port()
    process = start_service([sys.executable, "-m", "metricad", "serve", str(run), "--port", str(port), "--device",
                             "cpu", "--max-batch", "8"], port)
    answers, reloads = [], 0
    try:
        clients = [threading.Thread(target=_client, args=(port, files, answers)) for _ in range(CLIENTS)]
        for thread in clients:
            thread.start()
        while any(thread.is_alive() for thread in clients):
            write_text(Layout(run).config, (first, second)[reloads % 2])
            assert httpx.post(f"http://127.0.0.1:{port}/admin/reload", timeout=60).status_code == 200
            reloads += 1
            time.sleep(0.02)
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert len(answers) == CLIENTS * REQUESTS and {status for status, _ in answers} == {200}
    versions = [answer["version"] for _, answer in answers]
    assert reloads >= 4 and set(versions) == {1, 2}, (reloads, set(versions))
    for _, answer in answers:
        scores = np.array([result["score"] for result in answer["results"]])
        np.testing.assert_allclose(scores, expected[answer["version"]], rtol=1e-4, atol=1e-3)


def test_sighup_switches_to_the_newest_version(writable_patch_run):
    """... and ``--window`` sets how many recent images the line's anomaly rate is taken over."""
    run, data = writable_patch_run
    port = free_port()
    process = start_service([sys.executable, "-m", "metricad", "serve", str(run), "--port", str(port), "--device",
                             "cpu", "--window", "3"], port)
    try:
        spots = sorted((data / "test" / "spot").glob("*.png"))
        goods = sorted((data / "test" / "good").glob("*.png"))
        for path in goods[:2] + spots[:2]:
            httpx.post(f"http://127.0.0.1:{port}/score", content=path.read_bytes(),
                       headers={"Content-Type": "image/png"}, timeout=30).raise_for_status()
        monitor = httpx.get(f"http://127.0.0.1:{port}/monitor", timeout=30).json()
        assert (monitor["window"], monitor["seen"]) == (3, 3)
        assert monitor["anomaly_rate"] == pytest.approx(2 / 3)  # the last three: one good, two spots
        assert _info_version(port) == 1
        assert main(["update", str(run), "--threshold", "42", "--by", "cron"]) == 0
        assert _info_version(port) == 1  # written, not yet served
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.time() + 30
        while _info_version(port) != 2 and time.time() < deadline:
            time.sleep(0.05)
        assert _info_version(port) == 2
        assert httpx.get(f"http://127.0.0.1:{port}/info", timeout=30).json()["threshold"] == 42.0
    finally:
        process.terminate()
        process.wait(timeout=60)
