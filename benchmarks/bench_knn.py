"""k-NN alone: ms per query batch and recall@1 against exact search, per anchor count and index type.

    .venv/bin/python benchmarks/bench_knn.py [--anchors 6000,60000,1000000] [--queries 2000] [--batch-size 20]

Vectors are 128-d float32 drawn around 1,000 random centres (clustered like real embeddings). Index build time
is reported apart from search time. Query time: median over batches. Prints markdown, then JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import numpy as np

from metricad.index import ExactIndex, FaissIndex


def clustered(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--anchors", default="6000,60000,1000000")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, args.dim))
    queries = clustered(args.queries, args.dim, centres, rng)
    batches = [queries[i:i + args.batch_size] for i in range(0, len(queries), args.batch_size)]
    rows = []
    for n in [int(v) for v in args.anchors.split(",")]:
        anchors = clustered(n, args.dim, centres, rng)
        candidates = {"exact (torch)": ExactIndex, "faiss-flat": lambda: FaissIndex("flat"),
                      "faiss-ivf": partial(FaissIndex, "ivf", nlist=max(16, int(np.sqrt(n))), nprobe=16),
                      "faiss-hnsw": lambda: FaissIndex("hnsw", m=32, ef_search=128)}
        truth = None
        for name, make in candidates.items():
            start = time.perf_counter()
            index = make()
            index.add(anchors)
            build_s = time.perf_counter() - start
            found, times = [], []
            for batch in batches:
                t = time.perf_counter()
                found.append(index.search(batch, 1)[1].numpy()[:, 0])
                times.append(time.perf_counter() - t)
            found = np.concatenate(found)
            truth = found if truth is None else truth  # the first index is the exact one
            rows.append({"anchors": n, "queries": len(queries), "index": name, "build_seconds": build_s,
                         "batch_size": args.batch_size,
                         "ms_per_batch": 1000 * statistics.median(times),
                         "recall_at_1": float(np.mean(found == truth))})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"| anchors | index | build s | ms per batch of {args.batch_size} | recall@1 vs exact |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['anchors']:,} | {r['index']} | {r['build_seconds']:.1f} | {r['ms_per_batch']:.3f} | "
              f"{r['recall_at_1']:.4f} |")
    print()
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
