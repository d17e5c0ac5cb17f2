"""Fashion-MNIST from its four original IDX ``.gz`` files.

Where the files are looked for, in order:
  1. an explicit ``data_dir`` (the CLI's ``--data-dir``),
  2. the ``METRICAD_DATA`` environment variable,
  3. Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``),
  4. metricad's cache (``~/.cache/metricad/fashion-mnist``), filled by a checksummed download.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

CLASS_NAMES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metricad" / "fashion-mnist"
_IDX_DTYPE_UBYTE = 0x08


class DataNotFoundError(FileNotFoundError):
    """Raised when no directory holds the four Fashion-MNIST files and they cannot be downloaded."""


def _has_all_files(directory: Path) -> bool:
    return all((directory / name).is_file() for name in FILES.values())


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places searched for the files, in order, each with where it came from."""
    candidates = []
    if data_dir is not None:
        candidates.append(("--data-dir", Path(data_dir)))
    if os.environ.get("METRICAD_DATA"):
        candidates.append(("METRICAD_DATA", Path(os.environ["METRICAD_DATA"])))
    candidates.append(("Debian package dataset-fashion-mnist", DEBIAN_DIR))
    candidates.append(("metricad cache", CACHE_DIR))
    return candidates


def _download(directory: Path) -> None:
    # torchvision keeps the mirrors and MD5 checksums of the original files; reuse them rather than a copy.
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    directory.mkdir(parents=True, exist_ok=True)
    for filename, md5 in FashionMNIST.resources:
        if (directory / filename).is_file():
            continue
        errors = []
        for mirror in FashionMNIST.mirrors:
            try:
                # download_url writes to the final name only after the MD5 matched.
                download_url(mirror + filename, str(directory), filename=filename, md5=md5)
                break
            except Exception as exc:  # noqa: BLE001 - any failure means "try the next mirror"
                errors.append(f"{mirror}: {exc}")
                (directory / filename).unlink(missing_ok=True)
        else:
            raise OSError("; ".join(errors))


def locate(data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the first directory holding all four files, downloading into the cache if allowed."""
    candidates = candidate_dirs(data_dir)
    if data_dir is not None and not _has_all_files(Path(data_dir)):
        missing = [n for n in FILES.values() if not (Path(data_dir) / n).is_file()]
        raise DataNotFoundError(f"--data-dir {data_dir} lacks the Fashion-MNIST file(s): {', '.join(missing)}")
    for _, directory in candidates:
        if _has_all_files(directory):
            return directory
    download_error = "download disabled"
    if download:
        try:
            _download(CACHE_DIR)
            return CACHE_DIR
        except Exception as exc:  # noqa: BLE001 - reported below with the remedies
            download_error = str(exc)
    searched = "\n".join(f"  - {where}: {path}" for where, path in candidates)
    raise DataNotFoundError(
        "Fashion-MNIST was not found. Searched:\n"
        f"{searched}\n"
        f"Download into {CACHE_DIR} failed: {download_error}\n"
        "Get the data in one of these ways:\n"
        "  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist\n"
        "  - put the four files (" + ", ".join(FILES.values()) + ") in a directory and pass --data-dir DIR\n"
        "    or set METRICAD_DATA=DIR\n"
        "  - run once on a machine with internet access (files are fetched with MD5 checks)"
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one gzipped IDX file of unsigned bytes; corrupt or truncated files raise ValueError naming the file."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable gzip file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_DTYPE_UBYTE:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header_len != expected:
        raise ValueError(f"{path}: IDX header announces shape {shape} ({expected} bytes) "
                         f"but the file holds {len(raw) - header_len} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True):
    """Return ``(train_images, train_labels), (test_images, test_labels)`` as uint8 arrays, images (N, 28, 28)."""
    directory = locate(data_dir, download=download)
    arrays = {key: read_idx(directory / name) for key, name in FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match")
    return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])
