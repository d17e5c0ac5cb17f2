"""ELPV, the electroluminescence images of solar cells (Buerhop-Lutz et al. 2018; Deitsch et al. 2019), laid out as
image folders for a one-class benchmark: ``metricad export-dataset --dataset elpv --out DIR``.

The ``elpv-dataset`` package (CC BY-NC-SA 4.0) ships the 2,624 cells, 300x300 grey, each with the probability
an expert gave it of being defective (0, 1/3, 2/3, 1) and its module type (mono, poly). Per type, 70 % of the
probability-0 cells (seeded) are the good training images; the test set is the other 30 % against the cells of
probability 1; the uncertain ones (1/3, 2/3) are left out::

    DIR/mono/train/good/   DIR/mono/test/good/   DIR/mono/test/defect/
    DIR/poly/train/good/   DIR/poly/test/good/   DIR/poly/test/defect/

Files keep their package names (``cell0001.png``); nothing is resized.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

TYPES = ("mono", "poly")
TRAIN_FRACTION = 0.7


def elpv_labels() -> tuple[Path, list[tuple[str, float, str]]]:
    """The package's image folder and its ``(file, defect probability, type)`` rows."""
    try:
        import elpv_dataset
    except ImportError:
        raise ValueError("the ELPV images come from the elpv-dataset package: pip install elpv-dataset "
                         "(scripts/setup.sh does)") from None
    root = Path(elpv_dataset.__file__).parent / "data"
    rows = []
    for line in (root / "labels.csv").read_text().splitlines():
        if line.strip():
            path, probability, kind = line.split()
            rows.append((path, float(probability), kind))
    return root, rows


def elpv_split(rows, kind: str, seed: int = 0) -> dict[str, list[str]]:
    """``{"train": good files, "test/good": good files, "test/defect": defect files}`` of one module type."""
    good = sorted(path for path, probability, k in rows if k == kind and probability == 0.0)
    defect = sorted(path for path, probability, k in rows if k == kind and probability == 1.0)
    order = np.random.default_rng(seed).permutation(len(good))
    n_train = int(TRAIN_FRACTION * len(good))
    return {"train/good": sorted(good[i] for i in order[:n_train]),
            "test/good": sorted(good[i] for i in order[n_train:]), "test/defect": defect}


def export_elpv(out, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write the folders (module docstring) into ``out``, complete or not at all; returns the counts."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists: choose another --out")
    root, rows = elpv_labels()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    counts = {}
    try:
        for kind in TYPES:
            split = elpv_split(rows, kind, seed)
            counts[kind] = {part: len(files) for part, files in split.items()}
            for part, files in split.items():
                folder = tmp / kind / part
                folder.mkdir(parents=True)
                for name in files:
                    shutil.copyfile(root / name, folder / Path(name).name)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts
