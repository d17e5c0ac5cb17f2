import gzip

import numpy as np
import pytest

from metricad.data import DataNotFoundError, fashion_mnist, load_fashion_mnist, locate, make_split, read_idx


def test_reads_idx_files(fake_fashion_dir):
    (x, y), (xt, yt) = load_fashion_mnist(fake_fashion_dir, download=False)
    assert x.shape == (400, 28, 28) and x.dtype == np.uint8 and y.shape == (400,)
    assert xt.shape == (200, 28, 28) and sorted(set(yt.tolist())) == list(range(10))


def test_corrupt_idx_errors_name_the_file(tmp_path):
    bad_gzip = tmp_path / "a.gz"
    bad_gzip.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="a.gz: not a readable gzip"):
        read_idx(bad_gzip)
    truncated = tmp_path / "b.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match=r"b.gz: IDX header announces shape \(10,\)"):
        read_idx(truncated)
    wrong_magic = tmp_path / "c.gz"
    with gzip.open(wrong_magic, "wb") as f:
        f.write(b"\x89PNG....")
    with pytest.raises(ValueError, match="c.gz: not an IDX"):
        read_idx(wrong_magic)


def test_search_order_and_missing_data_message(tmp_path, fake_fashion_dir, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fashion_mnist, "CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.setenv("METRICAD_DATA", str(fake_fashion_dir))
    assert locate(download=False) == fake_fashion_dir
    with pytest.raises(DataNotFoundError, match="--data-dir .* lacks"):
        locate(tmp_path, download=False)  # an explicit directory is not silently skipped
    monkeypatch.delenv("METRICAD_DATA")
    with pytest.raises(DataNotFoundError) as err:
        locate(download=False)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert str(tmp_path / "no-debian") in message


def test_download_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fashion_mnist, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("METRICAD_DATA", raising=False)

    def offline(directory):
        raise OSError("network unreachable")

    monkeypatch.setattr(fashion_mnist, "_download", offline)
    with pytest.raises(DataNotFoundError, match="network unreachable"):
        locate()


def test_split_follows_the_experiment(fake_fashion_dir):
    train, test = load_fashion_mnist(fake_fashion_dir, download=False)
    split = make_split(train, test, normal=7, anomaly=9)
    assert 9 not in split.train_classes and len(split.train_images) == 360
    assert len(split.anchor_images) == 40
    np.testing.assert_array_equal(split.anchor_images, train[0][train[1] == 7])
    assert len(split.test_images) == 40 and split.test_is_anomaly.sum() == 20
    np.testing.assert_array_equal(split.training_labels("binary"), (split.train_classes == 7).astype(int))
    fine = split.training_labels("fine")
    assert sorted(set(fine.tolist())) == list(range(9))
    assert set(split.train_classes[fine == split.normal_label("fine")]) == {7}
    assert split.normal_label("fine") == 7 and make_split(train, test, 8, 3).normal_label("fine") == 7
    assert split.normal_label("binary") == 1
    limited = make_split(train, test, normal=3, anomaly=0, limit=5)
    assert len(limited.train_images) == 45 and len(limited.anchor_images) == 5
    for bad, match in (({"normal": 11}, "--normal 11"), ({"anomaly": 7}, "must differ"), ({"limit": 0}, "--limit")):
        with pytest.raises(ValueError, match=match):
            make_split(train, test, **{"normal": 7, "anomaly": 9, **bad})


def test_validation_split_uses_training_images_only():
    from metricad.data import make_split, validation_split

    rng = np.random.default_rng(0)
    train = (rng.integers(0, 255, (300, 28, 28)).astype(np.uint8), np.repeat(np.arange(10), 30))
    test = (rng.integers(0, 255, (100, 28, 28)).astype(np.uint8), np.repeat(np.arange(10), 10))
    split = make_split(train, test, normal=7, anomaly=9)
    val = validation_split(split, stand_in_anomaly=5, fraction=0.2)
    assert val.anomaly_class == 5 and 5 not in val.train_classes and 9 not in val.train_classes
    assert len(val.anchor_images) == 24 and val.test_is_anomaly.tolist() == [0] * 6 + [1] * 30
    held_out = val.test_images[:6]
    train_rows = {img.tobytes() for img in split.train_images}
    assert all(img.tobytes() in train_rows for img in val.test_images)  # nothing from the test split
    assert not {img.tobytes() for img in held_out} & {img.tobytes() for img in val.anchor_images}
    with pytest.raises(ValueError, match="reference class"):
        validation_split(split, stand_in_anomaly=7)
