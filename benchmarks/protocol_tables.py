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
import sys
from pathlib import Path

from metricad.compare.comparison import summarize, summarize_few
from metricad.data.fashion_mnist import CLASS_NAMES


def _zero_cell(summary: dict | None, n_seeds: int) -> str:
    """A method's AUC with no anomaly seen; the number of seeds when it differs from the table's."""
    if summary is None:
        return "–"
    text = (f"{summary['auc_mean']:.4f} ± {summary['auc_std']:.4f}" if summary["seeds"] > 1
            else f"{summary['auc_mean']:.4f}")
    return text + (f" ({summary['seeds']})" if summary["seeds"] != n_seeds else "")


def pair_table(pair: dict) -> str:
    # The aggregation is compare's own (the figures of compare.md); this only lays both protocols side by side.
    rows = pair["rows"]
    zero = {s["method"]: s for s in summarize(rows)}
    few = {(s["K"], s["method"]): s for s in summarize_few(rows)}
    ks = sorted({k for k, _ in few})
    seeds = sorted({r["seed"] for r in rows})
    title = (f"{CLASS_NAMES[pair['normal']]} ({pair['normal']}) vs {CLASS_NAMES[pair['anomaly']]} "
             f"({pair['anomaly']}), seeds {','.join(map(str, seeds))}")
    head = ["method", "no anomaly seen: AUC"] + [f"K = {k}: AUC / test F1" for k in ks]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    methods = sorted(dict.fromkeys(r["method"] for r in rows),
                     key=lambda m: -zero[m]["auc_mean"] if m in zero else 0.0)
    for method in methods:
        cells = [method, _zero_cell(zero.get(method), len(seeds))]
        cells += [f"{few[k, method]['auc_mean']:.4f} / {few[k, method]['f1_mean']:.3f}" if (k, method) in few
                  else "–" for k in ks]
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
