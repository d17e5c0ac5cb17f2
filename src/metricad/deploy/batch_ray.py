"""``metricad score ... --engine ray``: the batch scoring of ``metricad.deploy.batch`` on a Ray cluster, through
Ray Data.

Paths are a Ray dataset; ``map_batches`` sends chunks to a pool of actors, each holding one scorer (a model
bundle on ONNX Runtime, or a run's detector) loaded once. The scored chunks stream back to this process, which
writes each as a part file the moment it arrives, as the local engine does: Ray's own ``write_parquet`` runs in
worker tasks that can finish after this job is killed, so that a rerun could read a part as missing and then see
it appear (rows scored twice), and it waits for a free CPU that the actors hold. A local Ray is started when no
``address`` is given (``ray.init(address="auto")`` joins a running cluster).
"""

from __future__ import annotations

from pathlib import Path

from metricad.deploy.chunks import next_part_number, part_schema, write_part


class ChunkScorer:
    """A Ray actor: the scorer, loaded once, scoring each chunk of paths Ray Data sends."""

    def __init__(self, target: str, runtime: str, boxes: bool = False):
        from metricad.deploy.scorer import load_scorer

        # One thread an actor: Ray runs as many actors as the cluster has CPUs.
        self.scorer, self.boxes = load_scorer(target, runtime=runtime, threads=1), boxes

    def __call__(self, batch: dict):
        from metricad.deploy.chunks import arrow_table, score_chunk

        return arrow_table(score_chunk(self.scorer, [str(p) for p in batch["path"]], self.boxes))


def score_with_ray(target, paths: list[str], out: Path, chunk_size: int, runtime: str = "onnx",
                   address: str | None = None, actors: int | None = None, boxes: bool = False) -> dict:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        dataset = ray.data.from_items([{"path": path} for path in paths])
        dataset = dataset.map_batches(ChunkScorer, fn_constructor_args=(str(Path(target).resolve()), runtime, boxes),
                                      batch_size=chunk_size, batch_format="numpy",
                                      compute=ray.data.ActorPoolStrategy(size=actors))
        number = next_part_number(out)
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            write_part(out, table.cast(part_schema(boxes)), number)
            number += 1
    finally:
        if started_here:
            ray.shutdown()
    return {"engine": "ray", "actors": actors}
