"""Batch scoring at scale: folders, globs and path lists streamed chunk by chunk into a Parquet dataset, resumed
after a kill, on the local engine and on a local Ray; and the large-anchor-bank options of a run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metricad.cli import main
from metricad.run import open_run

pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """150 PNGs in a folder tree (every third in a sub-folder) and one broken file."""
    root = tmp_path_factory.mktemp("images")
    images = np.random.default_rng(5).integers(0, 256, (150, 28, 28), dtype=np.uint8)
    for i, image in enumerate(images):
        folder = root / "deeper" if i % 3 == 0 else root
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    (root / "zz-broken.png").write_bytes(b"\x89PNG broken")
    return root


@pytest.fixture(scope="module")
def bundle(trained_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "part.onnx"
    assert main(["export", str(trained_run), "--out", str(path)]) == 0
    return path


def _table(out):
    return pq.read_table(out).to_pandas().set_index("path").sort_index()


def test_a_folder_is_scored_into_parquet_as_the_detector_scores_it(bundle, image_folder, trained_run, tmp_path):
    out = tmp_path / "scores.parquet"
    assert main(["score", str(bundle), str(image_folder), "--out", str(out), "--chunk-size", "40"]) == 0
    table = _table(out)
    assert len(table) == 151 and len(list(out.glob("part-*.parquet"))) == 4  # 151 images in chunks of 40
    broken = table.loc[str(image_folder / "zz-broken.png")]
    assert broken["label"] == "unreadable" and "not a readable image" in broken["error"] and np.isnan(broken["score"])
    good = table[table.label != "unreadable"]
    images = np.stack([np.asarray(Image.open(p)) for p in good.index])
    detector = open_run(trained_run, device="cpu").detector
    np.testing.assert_allclose(good.score, detector.score_samples(images), rtol=1e-4, atol=1e-3)
    assert list(good.label) == ["anomaly" if f else "normal" for f in detector.predict(images)]
    # The column --normalized adds to the CSV is always in the Parquet output (it used to be dropped).
    np.testing.assert_allclose(good.normalized_score, 1 / (1 + np.exp(detector.offset_ - good.score)), rtol=1e-5)
    assert set(table.model_id) == {open_run(trained_run).model_id}
    # A glob and a list of paths name the same images.
    (tmp_path / "paths.txt").write_text("\n".join(sorted(str(p) for p in image_folder.rglob("*.png"))[:10]))
    for spec, expected in ((str(image_folder / "deeper" / "*.png"), 50), (str(tmp_path / "paths.txt"), 10)):
        target = tmp_path / f"out-{expected}"
        assert main(["score", str(bundle), spec, "--out", str(target)]) == 0
        assert len(_table(target)) == expected


def _folder_with_a_stuck_file(image_folder, tmp_path, stuck: str):
    """A copy of ``image_folder`` in which ``stuck`` is a named pipe: reading it blocks until it is killed, so a
    job can be killed at a known point (every chunk before it written, none after), with no race on the clock."""
    folder = tmp_path / "images"
    shutil.copytree(image_folder, folder)
    (folder / stuck).unlink()
    os.mkfifo(folder / stuck)
    return folder


def _kill_when(job: subprocess.Popen, parts_written, out) -> None:
    deadline = time.monotonic() + 180
    while not parts_written(list(out.glob("*.parquet"))) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.poll() is None, "the job ended although one of its files can never be read"
    os.killpg(job.pid, signal.SIGKILL)  # the job and every process it started (Ray's too)
    job.wait()


def test_a_killed_job_resumes_where_it_stopped(bundle, image_folder, tmp_path):
    from metricad.data.images import list_image_files

    stuck = "0100.png"
    folder = _folder_with_a_stuck_file(image_folder, tmp_path, stuck)
    order = [Path(p).name for p in list_image_files([folder])]
    before = order.index(stuck) // 10  # the chunks of 10 written before the stuck one
    out = tmp_path / "scores.parquet"
    job = subprocess.Popen([sys.executable, "-m", "metricad", "score", str(bundle), str(folder), "--out", str(out),
                            "--chunk-size", "10"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    _kill_when(job, lambda parts: len(parts) >= before, out)
    assert len(pq.read_table(out)) == 10 * before
    (folder / stuck).unlink()
    shutil.copyfile(image_folder / stuck, folder / stuck)
    (out / "part-999999.parquet").write_bytes(b"PAR1 truncated")  # what a writer killed mid-file could leave
    assert main(["score", str(bundle), str(folder), "--out", str(out), "--chunk-size", "64"]) == 0
    table = pq.read_table(out).to_pandas()
    assert len(table) == 151 and table.path.is_unique  # each image once: nothing scored twice, nothing lost
    assert not (out / "part-999999.parquet").exists()


def test_a_damaged_part_is_scored_again_without_touching_the_good_ones(bundle, image_folder, tmp_path):
    out = tmp_path / "scores.parquet"
    assert main(["score", str(bundle), str(image_folder), "--out", str(out), "--chunk-size", "40"]) == 0
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 4
    good = {part.name: part.read_bytes() for part in parts[1:]}
    parts[0].write_bytes(parts[0].read_bytes()[:100])  # the first part, damaged
    assert main(["score", str(bundle), str(image_folder), "--out", str(out), "--chunk-size", "40"]) == 0
    table = pq.read_table(out).to_pandas()
    assert len(table) == 151 and table.path.is_unique  # its 40 images scored again, under a name no part has
    assert {name: (out / name).read_bytes() for name in good} == good  # the good parts untouched


def test_inputs_naming_the_same_file_twice_score_it_once(bundle, image_folder, tmp_path):
    link = tmp_path / "linked"
    link.symlink_to(image_folder, target_is_directory=True)
    again = image_folder / ".." / image_folder.name / "0001.png"  # another spelling of a file in the folder
    out = tmp_path / "scores.parquet"
    inputs = [str(image_folder), str(image_folder / "deeper" / "*.png"), str(again), str(link)]
    assert main(["score", str(bundle), *inputs, "--out", str(out)]) == 0
    table = pq.read_table(out).to_pandas()
    assert len(table) == 151 and {Path(p).resolve() for p in table.path} == {
        p.resolve() for p in image_folder.rglob("*.png")}
    assert main(["score", str(bundle), str(link), "--out", str(out)]) == 0  # the same files by the link: done
    assert len(pq.read_table(out)) == 151


def test_the_ray_engine_scores_as_the_local_one(bundle, image_folder, tmp_path):
    pytest.importorskip("ray")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert main(["score", str(bundle), str(image_folder), "--out", str(local)]) == 0
    assert main(["score", str(bundle), str(image_folder), "--out", str(distributed), "--engine", "ray",
                 "--chunk-size", "50"]) == 0
    a, b = _table(local), _table(distributed)
    assert list(a.index) == list(b.index)
    np.testing.assert_array_equal(a.score, b.score)
    assert list(a.label) == list(b.label) and list(a.error.fillna("")) == list(b.error.fillna(""))


def test_a_killed_ray_job_is_resumed_by_a_rerun(bundle, image_folder, tmp_path):
    pytest.importorskip("ray")
    stuck = "0100.png"
    folder = _folder_with_a_stuck_file(image_folder, tmp_path, stuck)
    out = tmp_path / "scores.parquet"
    job = subprocess.Popen([sys.executable, "-m", "metricad", "score", str(bundle), str(folder), "--out", str(out),
                            "--engine", "ray", "--chunk-size", "10"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    _kill_when(job, lambda parts: len(parts) >= 1, out)  # Ray has written a part; the stuck chunk never ends
    written = len(pq.read_table(out))
    assert 0 < written < 151
    (folder / stuck).unlink()
    shutil.copyfile(image_folder / stuck, folder / stuck)
    assert main(["score", str(bundle), str(folder), "--out", str(out), "--engine", "ray", "--chunk-size", "50"]) == 0
    table = _table(out)
    assert len(table) == 151 and table.index.is_unique  # every image exactly once
    assert main(["score", str(bundle), str(folder), "--out", str(out), "--engine", "ray"]) == 0
    assert len(_table(out)) == 151  # a finished job: nothing left to score, nothing written twice
    local = tmp_path / "local"
    assert main(["score", str(bundle), str(folder), "--out", str(local)]) == 0
    np.testing.assert_array_equal(_table(local).score, table.score)


def test_a_run_can_keep_a_coreset_in_a_faiss_index(tmp_path, fake_fashion_dir):
    pytest.importorskip("faiss")
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--data-dir", str(fake_fashion_dir), "--epochs", "1", "--batch-size",
                 "32", "--device", "cpu", "--index", "faiss-ivf", "--coreset", "12"]) == 0
    config = json.loads((run / "config.json").read_text())["detector"]
    assert (config["index"], config["n_anchors"], config["anchor_sampling"]) == ("faiss-ivf", 12, "coreset")
    detector = open_run(run, device="cpu").detector  # the saved IVF index, deserialised: no pickle, no retraining
    knn = detector.graph_.members[0].experts["knn"]
    assert knn.search_index_.ntotal == 12 and len(detector.anchor_indices_) == 12
    queries = np.random.default_rng(0).integers(0, 255, (5, 28, 28)).astype(np.uint8)
    fresh = type(detector)(**detector.get_params()).fit(detector.normal_images_, detector.holdout_images_)
    np.testing.assert_array_equal(fresh.anchor_indices_, detector.anchor_indices_)  # the coreset is reproducible
    np.testing.assert_allclose(fresh.score_samples(queries), detector.score_samples(queries), rtol=1e-5, atol=1e-5)
