"""Starting a real service for the tests that need one (loopback only)."""

import socket
import subprocess
import time
import urllib.request


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
