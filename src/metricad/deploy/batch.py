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

from metricad.data.images import list_image_files
from metricad.deploy.chunks import next_part_number, part_schema, score_chunk, write_part


def done_paths(out: Path, boxes: bool = False) -> set[str]:
    """The resolved paths already scored in ``out``. A part file a killed writer left unreadable is removed (its
    images are scored again); a part of another schema (another metricad version) stops the job."""
    import pyarrow.parquet as pq

    done, schema = set(), part_schema(boxes)
    for part in sorted(Path(out).glob("*.parquet")) if Path(out).is_dir() else []:
        try:  # one open: the footer gives the schema, then only the path column is read
            parquet = pq.ParquetFile(part)
            found, paths = parquet.schema_arrow, parquet.read(columns=["path"]).column("path").to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a truncated file
            print(f"metricad score: {part} is incomplete ({exc}); removed, its images are scored again",
                  file=sys.stderr)
            part.unlink()
            continue
        if not found.equals(schema, check_metadata=False):
            raise ValueError(f"{part}: its columns ({', '.join(found.names)}) are not those this metricad writes "
                             f"({', '.join(schema.names)}; --boxes adds the last two): score into a new --out")
        done.update(os.path.realpath(path) for path in paths)
    return done


def score_to_parquet(target, inputs, out, chunk_size: int = 1024, engine: str = "local", device=None,
                     runtime: str = "onnx", ray_address: str | None = None, actors: int | None = None,
                     boxes: bool = False) -> dict:
    """Score every image of ``inputs`` with ``target`` into the Parquet dataset ``out``; return a summary.
    ``boxes``: each row also holds its defect mask's area and bounding boxes (a scorer with anomaly maps)."""
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    out = Path(out)
    paths = list_image_files(inputs)
    done = done_paths(out, boxes)
    todo = [p for p in paths if os.path.realpath(p) not in done]
    out.mkdir(parents=True, exist_ok=True)
    summary = {"images": len(paths), "already_scored": len(paths) - len(todo), "scored": len(todo), "out": str(out)}
    if not todo:
        return summary
    if engine == "ray":
        from metricad.deploy.batch_ray import score_with_ray

        return summary | score_with_ray(target, todo, out, chunk_size, runtime, ray_address, actors, boxes)
    if engine != "local":
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    from metricad.deploy.scorer import load_scorer

    scorer = load_scorer(target, device, runtime)
    if boxes:
        from metricad.localization import require_map

        require_map(scorer)
    number = next_part_number(out)
    for start in range(0, len(todo), chunk_size):
        write_part(out, score_chunk(scorer, todo[start:start + chunk_size], boxes), number)
        number += 1
    return summary | {"model_id": scorer.model_id}
