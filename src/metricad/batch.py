"""Scoring large image sets: stream through them in chunks with bounded memory, write the results as they come,
resume where a killed job stopped.

    metricad score RUN_OR_BUNDLE INPUT --out scores.parquet [--chunk-size 1024] [--engine local|ray]

INPUT is a folder (searched recursively), a glob pattern (quoted), a text file of paths (``.txt``, one a line) or
image files. The output is a Parquet dataset (a directory of part files, as Spark, Dask and pandas read it) with
the columns ``path``, ``score``, ``label`` (``normal``, ``anomaly`` or ``unreadable``), ``model_id``, ``error``
and ``normalized_score``. Each image is scored once: inputs naming the same file twice (compared on resolved
paths) give one row. The local engine writes each chunk as one part, atomically, under a number no part has; a
rerun reads the paths already there (a damaged part is removed and its images scored again) and scores only the
others. ``--engine ray`` runs the same scoring on a Ray cluster through Ray Data
(``map_batches`` with the scorer in actors; ``ray.init(address=...)``, or a local Ray), with the same resume.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from metricad.data.images import list_image_files, read_image

COLUMNS = ("path", "score", "label", "model_id", "error", "normalized_score")


def part_schema():
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("score", pa.float32()), ("label", pa.string()),
                      ("model_id", pa.string()), ("error", pa.string()), ("normalized_score", pa.float32())])


def arrow_table(rows: dict):
    """A chunk's rows as an Arrow table of the one schema every part has (an all-empty ``error`` column would
    otherwise be typed null in one part and string in another)."""
    import pyarrow as pa

    return pa.table({name: rows[name] for name in COLUMNS}, schema=part_schema())


def score_chunk(scorer, paths) -> dict[str, list]:
    """One chunk's rows: unreadable files get a row of their own (label ``unreadable``) instead of stopping a
    job of millions of images."""
    channels, size = scorer.input_spec
    images, good, errors = [], [], {}
    for path in paths:
        try:
            images.append(read_image(Path(path), size, channels))
            good.append(path)
        except ValueError as exc:
            errors[path] = str(exc)
    scores = scorer.score_samples(np.stack(images)) if images else np.empty(0, np.float32)
    flagged, normalized = scorer.predict_scores(scores), scorer.normalized_score(scores)
    by_path = {p: (float(s), "anomaly" if f else "normal", float(n))
               for p, s, f, n in zip(good, scores, flagged, normalized)}
    nan = (float("nan"), "unreadable", float("nan"))
    return {"path": list(paths),
            "score": [by_path.get(p, nan)[0] for p in paths], "label": [by_path.get(p, nan)[1] for p in paths],
            "model_id": [scorer.model_id] * len(paths), "error": [errors.get(p) for p in paths],
            "normalized_score": [by_path.get(p, nan)[2] for p in paths]}


def done_paths(out: Path) -> set[str]:
    """The resolved paths already scored in ``out``. A part file a killed writer left unreadable is removed (its
    images are scored again); a part of another schema (another metricad version) stops the job."""
    import pyarrow.parquet as pq

    done, schema = set(), part_schema()
    for part in sorted(Path(out).glob("*.parquet")) if Path(out).is_dir() else []:
        try:
            found = pq.read_schema(part)
            paths = pq.read_table(part, columns=["path"]).column("path").to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a truncated file
            print(f"metricad score: {part} is incomplete ({exc}); removed, its images are scored again",
                  file=sys.stderr)
            part.unlink()
            continue
        if not found.equals(schema, check_metadata=False):
            raise ValueError(f"{part}: its columns ({', '.join(found.names)}) are not those this metricad writes "
                             f"({', '.join(schema.names)}): score into a new --out")
        done.update(os.path.realpath(path) for path in paths)
    return done


def next_part_number(out: Path) -> int:
    """One past the highest part number in ``out``: never the name of a part that is there (parts removed as
    incomplete leave gaps, so the count of parts is not a free name)."""
    numbers = [int(p.stem[len("part-"):]) for p in out.glob("part-*.parquet") if p.stem[len("part-"):].isdigit()]
    return max(numbers, default=-1) + 1


def _write_part(out: Path, rows: dict, number: int) -> Path:
    import pyarrow.parquet as pq

    from metricad.files import atomic_write

    table = arrow_table(rows)
    return atomic_write(out / f"part-{number:06d}.parquet", lambda p: pq.write_table(table, p))


def score_to_parquet(target, inputs, out, chunk_size: int = 1024, engine: str = "local", device=None,
                     runtime: str = "onnx", ray_address: str | None = None, actors: int | None = None) -> dict:
    """Score every image of ``inputs`` with ``target`` into the Parquet dataset ``out``; return a summary."""
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    out = Path(out)
    paths = list_image_files(inputs)
    done = done_paths(out)
    todo = [p for p in paths if os.path.realpath(p) not in done]
    out.mkdir(parents=True, exist_ok=True)
    summary = {"images": len(paths), "already_scored": len(paths) - len(todo), "scored": len(todo), "out": str(out)}
    if not todo:
        return summary
    if engine == "ray":
        from metricad.batch_ray import score_with_ray

        return summary | score_with_ray(target, todo, out, chunk_size, runtime, ray_address, actors)
    if engine != "local":
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    from metricad.scorer import load_scorer

    scorer = load_scorer(target, device, runtime)
    number = next_part_number(out)
    for start in range(0, len(todo), chunk_size):
        _write_part(out, score_chunk(scorer, todo[start:start + chunk_size]), number)
        number += 1
    return summary | {"model_id": scorer.model_id}
