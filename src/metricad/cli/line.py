"""The commands for the line: export a run as a bundle, serve a run or bundle, and update one (a new version)."""

from __future__ import annotations

import sys
from pathlib import Path

from metricad.cli.commands import refuse_unused, set_threads
from metricad.layout import Layout


def cmd_export(args) -> None:
    from metricad.deploy.export import export_run

    out = Path(args.out) if args.out else Layout(args.run).bundle
    print(export_run(args.run, out))


def cmd_update(args) -> None:
    """A new version of a run or bundle: good images learned (runs only), or a threshold set by hand."""
    import getpass
    import json

    from metricad.deploy.scorer import is_bundle
    from metricad.deploy.versions import apply_threshold

    if args.add_good is None and args.threshold is None:
        raise ValueError("nothing to update: pass --add-good DIR (good images to learn) or --threshold VALUE")
    if args.add_good is not None and args.threshold is not None:
        raise ValueError("--add-good sets the threshold again by the run's rule; --threshold sets it by hand: pass "
                         "one per update")
    if not Path(args.target).exists():
        raise FileNotFoundError(f"{args.target}: no such run directory or model bundle")
    by = args.by or getpass.getuser()
    if args.threshold is not None:
        version = apply_threshold(args.target, args.threshold, by)
        print(f"{args.target}: version {version}, threshold {args.threshold} (set by {by})")
        return
    if is_bundle(args.target):
        raise ValueError(f"{args.target}: a model bundle holds no images and no training stack to learn with: "
                         "update its run (metricad update RUN --add-good DIR), which exports RUN/model.onnx again")
    set_threads(args.threads)
    from metricad.deploy.update import update_run

    print(json.dumps(update_run(args.target, args.add_good, by, args.device), indent=2))


def cmd_serve(args) -> None:
    from metricad.deploy.scorer import is_bundle
    from metricad.serve.auth import check_exposure, read_api_key

    if is_bundle(args.target):
        refuse_unused(args, ("runtime",), "a model bundle always runs on ONNX Runtime")
    api_key = read_api_key(args.api_key_file)
    check_exposure(args.host, api_key, args.insecure)  # before importing the web stack: a quick, clear refusal
    from metricad.serve import ServiceLimits
    from metricad.serve.app import serve

    limits = ServiceLimits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                           max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_files=args.max_files,
                           max_pixels=args.max_pixels)
    print(f"serving {args.target} on http://{args.host}:{args.port} (the page at /; POST /score, GET /health, "
          f"/info, /metrics, /docs); batches of up to {args.max_batch}, waiting at most {args.max_wait_ms} ms; "
          f"{'API key required' if api_key else 'no API key'}", file=sys.stderr)
    serve(args.target, args.host, args.port, limits, args.device, args.runtime or "torch", args.threads, api_key,
          args.insecure, args.window)
