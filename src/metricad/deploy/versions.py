"""Versions of a run or a model bundle: each change an operator makes (a threshold applied, good images learned by
``metricad update``) is a new version, written atomically, with the old one kept and who changed what recorded.

A run's version is its ``config.json``: a new version writes its detector tensors under a new name
(``detector-v3.safetensors``, never rewritten) and then switches by replacing ``config.json``, which names them,
in one rename, so a reader sees the old version or the new one, never a mix. The old ``config.json`` is kept in
``RUN/versions/`` (with it, its detector file stays reachable), and ``RUN/versions/history.jsonl`` gets a line:
the version, the change, who made it, when. A bundle (one ``.onnx`` file) carries its version in its metadata
(``metricad.bundle_version``); the old file is kept as ``BUNDLE.versions/v1.onnx`` and the history beside it.

Torch-free: a service on the light install applies a threshold to its bundle (with ``onnx``, the serve extra).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

from metricad.deploy.scorer import is_bundle
from metricad.files import atomic_write, write_json
from metricad.layout import Layout

HISTORY = "history.jsonl"
BUNDLE_VERSION_KEY = "metricad.bundle_version"
MAX_NAME = 100


def versions_dir(target) -> Path:
    """Where the earlier versions of ``target`` and its history are kept."""
    return Path(f"{target}.versions") if is_bundle(target) else Layout(target).versions


def corrections_dir(target) -> Path:
    """Where the images an operator marked (``good/``, ``defect/``, ``learned/``) are kept, named by the service."""
    return Path(f"{target}.corrections") if is_bundle(target) else Layout(target).corrections


def history(target) -> list[dict]:
    """Every change recorded for ``target``, oldest first (empty for a version never changed)."""
    path = versions_dir(target) / HISTORY
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def checked_name(by: str | None) -> str:
    """Who makes a change, as recorded: a short printable name (the operator's, or the command line's user)."""
    by = (by or "").strip() or "unknown"
    if len(by) > MAX_NAME or not by.isprintable():
        raise ValueError(f"who made the change must be a printable name of at most {MAX_NAME} characters, "
                         f"got {by[:MAX_NAME]!r}")
    return by


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _locked(target):
    """One writer at a time (the service and a command line may both write a version)."""
    directory = versions_dir(target)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _record(directory: Path, entry: dict) -> None:
    with open(directory / HISTORY, "a") as log:
        log.write(json.dumps(entry) + "\n")


def write_run_version(directory, change: dict, by: str, edit, write_detector=None) -> int:
    """A new version of the run at ``directory``: ``edit(config)`` changes a copy of its configuration;
    ``write_detector(path)``, when the fitted state changes, writes the new detector tensors. Returns the version."""
    by, layout = checked_name(by), Layout(directory)
    with _locked(directory) as versions:
        config = json.loads(layout.config.read_text())
        old = int(config.get("version", 1))
        shutil.copy2(layout.config, versions / f"config-v{old}.json")  # the old version, kept
        config = edit(config) or config
        config["version"] = old + 1
        if write_detector is not None:
            config["detector_file"] = f"detector-v{old + 1}.safetensors"
            atomic_write(layout.detector_of(config), write_detector)
        write_json(layout.config, config)  # the switch, in one rename
        _record(versions, {"version": old + 1, "previous": old, "at": now(), "by": by, "change": change})
    return old + 1


def write_bundle_version(path, change: dict, by: str, metadata: dict | None = None, write=None) -> int:
    """A new version of the bundle ``path``: its ``metadata`` (keys without the ``metricad.`` prefix) replaced, or
    the whole file written again by ``write(version)`` (an export, atomic). The old file is kept in
    ``BUNDLE.versions/``. Returns the version."""
    try:
        import onnx
    except ModuleNotFoundError:
        raise ValueError(f"{path}: a new version of a bundle rewrites it with the onnx package: pip install "
                         "'metricad[serve]'") from None

    from metricad.deploy.bundle import bundle_metadata

    by = checked_name(by)
    with _locked(path) as versions:
        model = onnx.load(str(path))
        props = {entry.key: entry.value for entry in model.metadata_props}
        old = int(props.get(BUNDLE_VERSION_KEY, "1"))
        if not (versions / f"v{old}.onnx").exists():
            shutil.copy2(path, versions / f"v{old}.onnx")
        if write is not None:
            write(old + 1)
        else:
            props |= bundle_metadata(metadata) | {BUNDLE_VERSION_KEY: str(old + 1)}
            del model.metadata_props[:]
            for key, value in props.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            atomic_write(path, lambda p: onnx.save(model, p))
        _record(versions, {"version": old + 1, "previous": old, "at": now(), "by": by, "change": change})
    return old + 1


def manual_record(value: float, previous: dict | None, by: str) -> dict:
    """How a threshold an operator applied was set: the value, by whom, when, and the rule it replaced."""
    return {"mode": "manual", "value": value, "by": by, "at": now(),
            "replaces": (previous or {}).get("mode", "unknown"), "images": "set by hand"}


def apply_threshold(target, value: float, by: str | None) -> int:
    """Set the image threshold of the run or bundle ``target`` to ``value`` as a new version; a run's own bundle
    (``RUN/model.onnx``) gets the same threshold. Returns the new version."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"the threshold must be a finite number, got {value!r}")
    value, by = float(value), checked_name(by)
    if is_bundle(target):
        return _bundle_threshold(target, value, by)
    config = json.loads(Layout(target).config.read_text())
    was = _offset_of(config, "detector")
    version = write_run_version(target, {"threshold": value, "was": was}, by,
                                lambda c: c | _with_offset(c, value, by, section="detector"))
    if Layout(target).bundle.is_file():
        _bundle_threshold(Layout(target).bundle, value, by, run_version=version)
    return version


def _bundle_threshold(path, value: float, by: str, **extra) -> int:
    from metricad.deploy.bundle import Bundle

    meta = Bundle(path).metadata
    was = _offset_of(meta)
    return write_bundle_version(path, {"threshold": value, "was": was} | extra, by,
                                metadata=_with_offset(meta, value, by) | extra)


def _offset_of(facts: dict, section: str | None = None) -> float:
    tiling = facts.get("tiling")
    return float(tiling["offset"] if tiling else (facts[section] if section else facts)["offset"])


def _with_offset(facts: dict, value: float, by: str, section: str | None = None) -> dict:
    """The keys of ``facts`` that hold its threshold, set to ``value`` (a tiled model's is its tiling's)."""
    if facts.get("tiling"):
        tiling = dict(facts["tiling"])
        tiling |= {"offset": value, "threshold_set_on": manual_record(value, tiling.get("threshold_set_on"), by)}
        return {"tiling": tiling}
    inner = facts[section] if section else facts
    updated = {"offset": value, "threshold_set_on": manual_record(value, inner.get("threshold_set_on"), by)}
    return {section: inner | updated} if section else updated


__all__ = ["apply_threshold", "corrections_dir", "history", "versions_dir", "write_bundle_version",
           "write_run_version"]
