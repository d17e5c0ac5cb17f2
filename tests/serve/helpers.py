"""Starting a real service for the tests that need one (loopback only), and the light install: the CLI in a
subprocess with the training stack made unimportable."""

import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

BLOCKED = ("torch", "torchvision", "sklearn", "pytorch_metric_learning", "matplotlib", "onnx", "faiss", "tqdm")
PRELUDE = textwrap.dedent(f"""
    import importlib.abc, sys

    class TrainingStackAbsent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

    sys.meta_path.insert(0, TrainingStackAbsent())
    from metricad.cli import main
""")


def light(*args: str, timeout: int = 120, **kwargs):
    code = PRELUDE + f"\nrc = main({list(args)!r})\nassert not set(sys.modules) & {set(BLOCKED)!r}\nsys.exit(rc)\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(command: list[str], port: int, **popen) -> subprocess.Popen:
    """Start ``command`` (a ``metricad serve`` on ``port``) and return once its /health answers 200."""
    process = subprocess.Popen(command, **({"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} | popen))
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode} before it was healthy")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the service never became healthy")


def ready(client):
    """``client`` (a FastAPI ``TestClient``) once its app's ``/health`` answers 200."""
    for _ in range(400):
        if client.get("/health").status_code == 200:
            return client
        time.sleep(0.05)
    raise AssertionError("the service never became ready")
