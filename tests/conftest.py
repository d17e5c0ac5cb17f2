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


def write_spot_folders(root: Path, n_normal: int = 30, size=(60, 80), seed: int = 0) -> Path:
    """Good noise textures at ``size`` (normal/, test/good/) and test/spot/ images with a bright 8x10 spot, one
    place per image, its true mask in masks/spot/<stem>_mask.png (MVTec AD's naming)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(128, 12, (n_normal + 10, *size)), 0, 255).astype(np.uint8)
    for folder in ("normal", "test/good", "test/spot", "masks/spot"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images[:n_normal]):
        Image.fromarray(image).save(root / "normal" / f"{i:03d}.png")
    for i, image in enumerate(images[n_normal:n_normal + 5]):
        Image.fromarray(image).save(root / "test" / "good" / f"{i:03d}.png")
    for i, image in enumerate(images[n_normal + 5:]):
        image, mask = image.copy(), np.zeros(size, np.uint8)
        y, x = 8 + 8 * i, 10 + 12 * i
        image[y:y + 8, x:x + 10], mask[y:y + 8, x:x + 10] = 250, 255
        Image.fromarray(image).save(root / "test" / "spot" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / "spot" / f"{i:03d}_mask.png")
    return root


@pytest.fixture(scope="session")
def patch_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(run, data)``: the folder default (a pretrained backbone as it is, the patch expert) trained by the CLI on
    60x80 good textures at a 48x64 input, and its data folders (``write_spot_folders``). Shared: read only."""
    from metricad.cli import main

    root = tmp_path_factory.mktemp("patch")
    data = write_spot_folders(root / "data")
    run = root / "run"
    assert main(["train", "--out", str(run), "--normal-dir", str(data / "normal"), "--image-size", "48,64",
                 "--device", "cpu"]) == 0
    return run, data


def write_new_look(directory: Path, n: int = 3, size=(60, 80), seed: int = 5) -> list[Path]:
    """Good parts of a look the spot folders' normal images never had (the same noise under vertical stripes, as
    from a new supplier): a patch-level score flags them until it learns one (``metricad update``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    stripes = 25 * np.sin(np.arange(size[1]) / 2.0)[None]
    paths = []
    for i in range(n):
        image = np.clip(rng.normal(128, 12, size) + stripes, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(directory / f"look{i}.png")
        paths.append(directory / f"look{i}.png")
    return paths


@pytest.fixture
def writable_patch_run(patch_run, tmp_path) -> tuple[Path, Path]:
    """``(run, data)``: a copy of ``patch_run`` that a test may change (new versions, corrections)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(patch_run[0], run)
    return run, patch_run[1]
