"""The ``metricad`` command line: parses the options and calls the module that does the work.

Importing it needs neither torch nor the web stack: a light install (``pip install metricad``) scores and
serves model bundles, and a command that needs an extra says which one to install.
"""

from __future__ import annotations

import sys

from metricad.cli.parser import build_parser
from metricad.data.fashion_mnist import DataNotFoundError

EXTRAS = {"train": {"torch", "torchvision", "pytorch_metric_learning", "sklearn", "matplotlib", "tqdm", "onnx"},
          "serve": {"fastapi", "uvicorn", "starlette", "multipart", "prometheus_client"},
          "batch": {"pyarrow", "scipy"}, "ray": {"ray"}, "faiss": {"faiss"}}


def _missing_extra(error: ModuleNotFoundError, command: str) -> str | None:
    top = (error.name or "").split(".")[0]
    for name, modules in EXTRAS.items():
        if top in modules:
            return (f"metricad {command} needs the {name!r} extra, which is not installed ({top} is missing): "
                    f"pip install 'metricad[{name}]'")
    return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ModuleNotFoundError as error:
        message = _missing_extra(error, args.command)
        if message is None:
            raise
        print(f"metricad: error: {message}", file=sys.stderr)
        return 2
    except (DataNotFoundError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as exc:
        print(f"metricad: error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["build_parser", "main"]
