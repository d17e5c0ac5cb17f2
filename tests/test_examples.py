"""The README's Python example is a runnable file (docs/examples/python_api.py): it runs, small, on the fake
data, and the README shows it as it is."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "python_api.py"


def test_the_python_api_example_runs(fake_fashion_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("python_api", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    detector = example.main(data_dir=fake_fashion_dir, epochs=1, out=tmp_path / "run")
    out = capsys.readouterr().out
    assert "k-NN alone" in out and "heat-maps (4, 28, 28)" in out and "anomaly maps (4, 28, 28)" in out
    # The AUC it prints is the returned detector's on the test images, and the run it wrote scores alike.
    from sklearn.metrics import roc_auc_score

    from metricad import open_run
    from metricad.data import load_split

    split = load_split({"normal": 7, "anomaly": 9, "limit": None, "holdout": 0.1}, fake_fashion_dir)
    auc = roc_auc_score(split.test_is_anomaly, detector.score_samples(split.test_images))
    assert f"AUC {auc:.4f};" in out
    reopened = open_run(tmp_path / "run").detector
    assert reopened.offset_ == pytest.approx(detector.offset_, rel=1e-6)


def test_the_readme_shows_the_example_as_it_is():
    readme = (ROOT / "README.md").read_text()
    body = EXAMPLE.read_text()
    body = body[body.index("import argparse"):body.index('\n\nif __name__ == "__main__":')]
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert any(body.strip() in block for block in blocks), "README.md's Python block differs from the example"
