"""The benchmark scripts' results file: each row printed as it is measured and the file rewritten, so that a run
stopped half-way keeps what it measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def keep(rows: list[dict], row: dict, out: Path) -> None:
    print(json.dumps(row), file=sys.stderr, flush=True)
    rows.append(row)
    Path(out).write_text(json.dumps(rows, indent=1) + "\n")
