"""One chunk of a batch job, as both engines (``metricad.deploy.batch``, local; ``metricad.deploy.batch_ray``,
Ray) score and write it: the rows of a list of paths, the one Arrow schema every part file has, and the part
file itself, written by the job's own process (never by a worker that could outlive it) in one rename."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metricad.data.images import read_image


def part_schema(boxes: bool = False):
    """The columns of every part; with ``boxes`` also where the defect is: ``defect_area`` (pixels of the defect
    mask at the file's resolution) and ``defect_boxes`` (one ``[x0, y0, x1, y1]`` per region, largest first)."""
    import pyarrow as pa

    columns = [("path", pa.string()), ("score", pa.float32()), ("label", pa.string()), ("model_id", pa.string()),
               ("error", pa.string()), ("normalized_score", pa.float32())]
    if boxes:
        columns += [("defect_area", pa.int64()), ("defect_boxes", pa.list_(pa.list_(pa.int32())))]
    return pa.schema(columns)


def arrow_table(rows: dict):
    """A chunk's rows as an Arrow table of the one schema every part has (an all-empty ``error`` column would
    otherwise be typed null in one part and string in another)."""
    import pyarrow as pa

    schema = part_schema("defect_boxes" in rows)
    return pa.table({name: rows[name] for name in schema.names}, schema=schema)


def score_chunk(scorer, paths, boxes: bool = False) -> dict[str, list]:
    """One chunk's rows: unreadable files get a row of their own (label ``unreadable``) instead of stopping a
    job of millions of images. ``boxes``: the defect regions too (a scorer with anomaly maps)."""
    channels, size = scorer.input_spec
    images, good, errors = [], [], {}
    for path in paths:
        try:
            images.append(read_image(Path(path), size, channels))
            good.append(path)
        except ValueError as exc:
            errors[path] = str(exc)
    if boxes:
        scores, maps = scorer.score_with_maps(np.stack(images)) if images else (np.empty(0, np.float32), [])
    else:
        scores = scorer.score_samples(np.stack(images)) if images else np.empty(0, np.float32)
    flagged, normalized = scorer.predict_scores(scores), scorer.normalized_score(scores)
    by_path = {p: (float(s), "anomaly" if f else "normal", float(n))
               for p, s, f, n in zip(good, scores, flagged, normalized)}
    nan = (float("nan"), "unreadable", float("nan"))
    rows = {"path": list(paths),
            "score": [by_path.get(p, nan)[0] for p in paths], "label": [by_path.get(p, nan)[1] for p in paths],
            "model_id": [scorer.model_id] * len(paths), "error": [errors.get(p) for p in paths],
            "normalized_score": [by_path.get(p, nan)[2] for p in paths]}
    if boxes:
        found = {p: defect_regions(scorer, p, s, m) for p, s, m in zip(good, scores, maps)}
        rows["defect_area"] = [found[p][1] if p in found else None for p in paths]
        rows["defect_boxes"] = [found[p][0] if p in found else None for p in paths]
    return rows


def defect_regions(scorer, path, score: float, anomaly_map: np.ndarray) -> tuple[list[list[int]], int]:
    """``(boxes, area)`` of one image's defect mask at its file's resolution (``metricad.localization``)."""
    from PIL import Image

    from metricad.localization import at_file_size, regions

    with Image.open(path) as img:  # the header only: the file's size
        width, height = img.size
    return regions(at_file_size(scorer, score, anomaly_map, (height, width))[1])


def next_part_number(out: Path) -> int:
    """One past the highest part number in ``out``: never the name of a part that is there (parts removed as
    incomplete leave gaps, so the count of parts is not a free name)."""
    numbers = [int(p.stem[len("part-"):]) for p in out.glob("part-*.parquet") if p.stem[len("part-"):].isdigit()]
    return max(numbers, default=-1) + 1


def write_part(out: Path, rows, number: int) -> Path:
    """``out/part-<number>.parquet`` from a chunk's rows (or its Arrow table), atomically."""
    import pyarrow.parquet as pq

    from metricad.files import atomic_write

    table = rows if not isinstance(rows, dict) else arrow_table(rows)
    return atomic_write(out / f"part-{number:06d}.parquet", lambda p: pq.write_table(table, p))
