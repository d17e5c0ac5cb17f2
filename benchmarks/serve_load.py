"""Load on the scoring service over loopback: N concurrent clients, each sending single images, for a fixed time.

    .venv/bin/python benchmarks/serve_load.py --model seed-mobilenetv2 --clients 32 --duration 60 --max-batch 1,32

For each ``--max-batch`` value it starts ``metricad serve`` on 127.0.0.1 (a free port), waits for ``/health``,
runs the clients (each a keep-alive connection posting one PNG per request) until ``--duration`` seconds have
passed, then stops the server. Bounded: loopback only, fixed client count and duration, every request has a
timeout. With ``--model`` the run is built from random weights and 6,000 random anchors (speed does not depend
on them); ``--run`` serves an existing run instead. Prints markdown, then JSON.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_random_run(model_name: str, directory: Path, anchors: int) -> Path:
    import torch

    from metricad import Detector
    from metricad.models import create_model
    from metricad.run import write_run

    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (anchors, 28, 28), dtype=np.uint8)
    return write_run(directory, Detector(create_model(model_name), score="knn", device="cpu").fit(images), {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the service on port {port} was not ready after {timeout} s")


def client_loop(port: int, payloads: list[bytes], stop_at: float, latencies: list, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = 0
    while time.monotonic() < stop_at:
        body = payloads[i % len(payloads)]
        i += 1
        start = time.perf_counter()
        try:
            conn.request("POST", "/score", body=body, headers={"Content-Type": "image/png"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200 or "results" not in json.loads(data):
                errors.append(f"HTTP {response.status}: {data[:200]!r}")
                continue
        except (OSError, http.client.HTTPException, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - start)
    conn.close()


def run_load(run: Path, max_batch: int, clients: int, duration: float, runtime: str, payloads) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "metricad.cli", "serve", str(run), "--port", str(port),
                               "--max-batch", str(max_batch), "--runtime", runtime, "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port)
        latencies, errors = [], []
        stop_at = time.monotonic() + duration
        threads = [threading.Thread(target=client_loop, args=(port, payloads, stop_at, latencies, errors))
                   for _ in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    ms = sorted(1000 * x for x in latencies)
    return {"max_batch": max_batch, "clients": clients, "seconds": elapsed, "requests": len(ms),
            "errors": len(errors), "first_errors": errors[:3], "images_per_second": len(ms) / elapsed,
            "p50_ms": statistics.median(ms) if ms else None,
            "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else None, "runtime": runtime}


def main() -> None:
    parser = argparse.ArgumentParser()
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="serve this run directory")
    source.add_argument("--model", help="serve this model with random weights and random anchors")
    parser.add_argument("--anchors", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-batch", default="1,32")
    parser.add_argument("--runtime", default="torch")
    args = parser.parse_args()
    from PIL import Image

    rng = np.random.default_rng(1)
    payloads = []
    for _ in range(64):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buffer, format="PNG")
        payloads.append(buffer.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else make_random_run(args.model, Path(tmp) / "run", args.anchors)
        name = args.model or Path(args.run).name
        rows = []
        for max_batch in [int(b) for b in args.max_batch.split(",")]:
            rows.append({"model": name, **run_load(run, max_batch, args.clients, args.duration, args.runtime,
                                                  payloads)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| model | runtime | --max-batch | clients | seconds | requests | errors | images/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {r['max_batch']} | {r['clients']} | {r['seconds']:.0f} | "
              f"{r['requests']} | {r['errors']} | {r['images_per_second']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    base = rows[0]["images_per_second"]
    for r in rows[1:]:
        print(f"\nthroughput with --max-batch {r['max_batch']}: {r['images_per_second'] / base:.2f}x "
              f"that of --max-batch {rows[0]['max_batch']}")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
