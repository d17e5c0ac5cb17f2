"""ELPV laid out as folders from the installed package: the split the issue states, complete or not at all."""

import pytest
from PIL import Image

from metricad.cli import main

pytest.importorskip("elpv_dataset")


def test_elpv_exports_the_stated_split(tmp_path, capsys):
    out = tmp_path / "elpv"
    assert main(["export-dataset", "--dataset", "elpv", "--out", str(out)]) == 0
    counts = {f"{kind}/{part}": len(list((out / kind / part).glob("*.png")))
              for kind in ("mono", "poly") for part in ("train/good", "test/good", "test/defect")}
    assert counts == {"mono/train/good": 411, "mono/test/good": 177, "mono/test/defect": 313,
                      "poly/train/good": 644, "poly/test/good": 276, "poly/test/defect": 402}
    train = {p.name for p in (out / "mono" / "train" / "good").iterdir()}
    assert not train & {p.name for p in (out / "mono" / "test" / "good").iterdir()}  # no cell in both
    with Image.open(next((out / "poly" / "test" / "defect").iterdir())) as cell:
        assert cell.size == (300, 300) and cell.mode == "L"
    assert "metricad train --out RUN --normal-dir" in capsys.readouterr().out
    assert main(["export-dataset", "--dataset", "elpv", "--out", str(out)]) == 2  # never over an existing folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".elpv")]
