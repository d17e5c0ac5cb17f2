"""Both protocols side by side, one table per pair, from the compare.json files of `metricad compare
--val-anomalies ...` runs (for BENCHMARKS.md).

    .venv/bin/python benchmarks/protocol_tables.py runs/cmp/7-9 runs/cmp/pairs

Per method: the AUC with no anomaly seen (mean ± std over seeds), and per K the AUC and the test F1 at the
threshold the K validation anomalies set (mean over seeds x draws). Rows come from the files as they are; this
script measures nothing and chooses nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from metricad.data.fashion_mnist import CLASS_NAMES


def _mean_std(values) -> str:
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def pair_table(pair: dict) -> str:
    rows = pair["rows"]
    ks = sorted({r["K"] for r in rows if "K" in r})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    zero = {m: [r["auc"] for r in rows if r["method"] == m and "K" not in r] for m in methods}
    seeds = sorted({r["seed"] for r in rows})
    title = (f"{CLASS_NAMES[pair['normal']]} ({pair['normal']}) vs {CLASS_NAMES[pair['anomaly']]} "
             f"({pair['anomaly']}), seeds {','.join(map(str, seeds))}")
    head = ["method", "no anomaly seen: AUC"] + [f"K = {k}: AUC / test F1" for k in ks]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    order = sorted(methods, key=lambda m: -statistics.mean(zero[m]) if zero[m] else 0.0)
    for method in order:
        cells = [method, _mean_std(zero[method]) + (f" ({len(zero[method])})" if len(zero[method]) != len(seeds)
                                                    else "") if zero[method] else "–"]
        for k in ks:
            sub = [r for r in rows if r["method"] == method and r.get("K") == k]
            cells.append(f"{statistics.mean(r['auc'] for r in sub):.4f} / {statistics.mean(r['f1'] for r in sub):.3f}"
                         if sub else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="directories holding compare.json")
    args = parser.parse_args(argv)
    for run in args.runs:
        path = Path(run) / "compare.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 2
        for pair in data.get("pairs", [data]):
            print(pair_table(pair))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
