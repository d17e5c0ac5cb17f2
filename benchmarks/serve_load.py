"""Load on the scoring service over loopback: N concurrent clients, each sending single images, for a fixed time.

    .venv/bin/python benchmarks/serve_load.py --model seed-mobilenetv2 --clients 32 --duration 60 --max-batch 1,32
    .venv/bin/python benchmarks/serve_load.py --target runs/x.onnx --python /tmp/light/bin/python --duration 600

For each ``--max-batch`` value it starts ``metricad serve`` on 127.0.0.1 (a free port) with ``--python`` (default:
this interpreter; another virtual environment's, e.g. a light install's), measures the start-up time until
``/health`` answers 200, runs the clients (each a keep-alive connection posting one PNG per request) until
``--duration`` seconds have passed, then stops the server. The server's resident memory is read from
/proc before the load, every ``--sample`` seconds under it and at its end; the growth is taken from the first
sample under load (buffers grown to size) to the last, so a soak shows whether it keeps growing. Bounded: loopback
only, fixed client count and duration, every request has a timeout. With ``--model`` the run is built from random
weights and 6,000 random anchors (speed does not depend on them); ``--target`` serves an existing run directory or
model bundle instead. Prints markdown, then JSON.
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


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


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


def run_load(target: Path, max_batch: int, clients: int, duration: float, runtime: str, payloads,
             python: str = sys.executable, sample: float = 60.0) -> dict:
    port = free_port()
    launched = time.perf_counter()
    server = subprocess.Popen([python, "-m", "metricad", "serve", str(target), "--port", str(port),
                               "--max-batch", str(max_batch), "--runtime", runtime, "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port)
        startup = time.perf_counter() - launched
        latencies, errors, memory = [], [], [rss_mb(server.pid)]
        stop_at = time.monotonic() + duration
        threads = [threading.Thread(target=client_loop, args=(port, payloads, stop_at, latencies, errors))
                   for _ in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            threads[0].join(timeout=sample)
            memory.append(rss_mb(server.pid))
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
            "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else None, "runtime": runtime,
            # Growth from the first sample under load (after --sample seconds of it: buffers and arenas grown to
            # size) to the last; the idle figure before any request is reported beside it.
            "startup_seconds": startup, "rss_mb_idle": memory[0], "rss_mb_start": memory[1],
            "rss_mb_end": memory[-1], "rss_mb_samples": memory, "rss_growth": memory[-1] / memory[1] - 1}


def main() -> None:
    parser = argparse.ArgumentParser()
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--target", help="serve this run directory or model bundle")
    source.add_argument("--model", help="serve this model with random weights and random anchors")
    parser.add_argument("--anchors", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-batch", default="1,32")
    parser.add_argument("--runtime", default="torch", help="for a run directory: torch or onnx")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (virtual environment) serving")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between two memory samples")
    args = parser.parse_args()
    from PIL import Image

    rng = np.random.default_rng(1)
    payloads = []
    for _ in range(64):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buffer, format="PNG")
        payloads.append(buffer.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(args.target) if args.target else make_random_run(args.model, Path(tmp) / "run", args.anchors)
        name = args.model or target.name
        rows = []
        for max_batch in [int(b) for b in args.max_batch.split(",")]:
            rows.append({"model": name, "python": args.python,
                         **run_load(target, max_batch, args.clients, args.duration, args.runtime, payloads,
                                    args.python, args.sample)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| target | runtime | --max-batch | clients | seconds | requests | errors | images/s | p50 ms | p99 ms | "
          "start-up s | RSS MB start -> end |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {r['max_batch']} | {r['clients']} | {r['seconds']:.0f} | "
              f"{r['requests']} | {r['errors']} | {r['images_per_second']:.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['startup_seconds']:.1f} | {r['rss_mb_start']:.0f} -> {r['rss_mb_end']:.0f} "
              f"({100 * r['rss_growth']:+.1f} %) |")
    base = rows[0]["images_per_second"]
    for r in rows[1:]:
        print(f"\nthroughput with --max-batch {r['max_batch']}: {r['images_per_second'] / base:.2f}x "
              f"that of --max-batch {rows[0]['max_batch']}")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
