import gzip
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images where class c is a bright 8x8 block at a class-specific place, plus noise."""
    images = rng.integers(0, 40, size=(len(labels), 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
        images[i, r:r + 8, col:col + 8] = 220
    return images


@pytest.fixture(scope="session")
def fake_fashion_dir(tmp_path_factory) -> Path:
    """A Fashion-MNIST look-alike: the four IDX .gz files, 40 training and 20 test images per class."""
    directory = tmp_path_factory.mktemp("fake-fashion-mnist")
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", 40), ("t10k", 20)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", synthetic_images(labels, rng))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fake_fashion_dir) -> Path:
    """A small run trained by the CLI on the fake data (2 epochs, compact-cnn), shared: tests may add evaluation
    files to it but must not change its model, anchors or threshold."""
    from metricad.cli import main

    run = tmp_path_factory.mktemp("runs") / "run"
    code = main(["train", "--out", str(run), "--data-dir", str(fake_fashion_dir), "--epochs", "2",
                 "--batch-size", "32", "--device", "cpu"])
    assert code == 0
    return run
