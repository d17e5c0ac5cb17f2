import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metricad.cli import main
from metricad.cli.commands import training_config
from metricad.cli.parser import build_parser
from metricad.data import fashion_mnist
from metricad.run import open_run


def test_train_writes_a_self_describing_run(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.json", "weights.safetensors", "detector.safetensors"} <= names
    config = json.loads((trained_run / "config.json").read_text())
    assert config["data"]["normal"] == 7 and config["data"]["anomaly"] == 9
    assert config["training"]["epochs"] == 2 and config["models"][0]["name"] == "compact-cnn"
    assert config["training"]["lr_schedule"] == "onecycle"  # the default's
    members = config["training"]["ensemble"]
    logs = ["train.log"] if members == 1 else [f"train-{i}.log" for i in range(members)]
    assert [len((trained_run / log).read_text().splitlines()) for log in logs] == [2] * members
    assert not [p for p in trained_run.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_default_run_embeds_to_unit_length_and_no_normalize_keeps_the_length(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["models"][0]["kwargs"]["normalize"] is True  # what the loaded model is rebuilt with
    norms = open_run(trained_run, device="cpu").detector.graph_.members[0].experts["knn"].anchors.norm(dim=1)
    np.testing.assert_allclose(norms.numpy(), 1.0, rtol=1e-5)
    parse = build_parser().parse_args
    assert training_config(parse(["train", "--out", "r", "--no-normalize"])).model_kwargs == {"normalize": False}
    assert training_config(parse(["train", "--out", "r"])).model_kwargs == {"normalize": True}
    assert training_config(parse(["train", "--out", "r", "--preset", "seed"])).model_kwargs == {}


def test_default_run_scores_by_the_presets_score_and_keeps_the_class_centres(trained_run):
    from safetensors.torch import load_file

    from metricad.recipe import PRESETS

    config = json.loads((trained_run / "config.json").read_text())
    assert config["training"]["score"] == config["detector"]["score"] == PRESETS["default"].score
    centres = load_file(str(trained_run / "weights.safetensors"))["member0.class_centres"]
    # binary labels (normal, reference) + three quarter turns of the normal images: 5 classes of 128-d centres
    assert tuple(centres.shape) == (128, 5)
    assert config["models"][0]["kwargs"] | {"num_classes": 5, "normal_label": 1} == config["models"][0]["kwargs"]
    parse = build_parser().parse_args
    assert training_config(parse(["train", "--out", "r", "--score", "knn"])).score == "knn"
    assert training_config(parse(["train", "--out", "r", "--loss", "semi-hard"])).score == "knn"  # no centres
    assert training_config(parse(["train", "--out", "r", "--loss", "arcface"])).score == PRESETS["default"].score
    assert training_config(parse(["train", "--out", "r", "--score", "knn+margin"])).score == "knn+margin"
    assert training_config(parse(["train", "--out", "r", "--preset", "seed"])).score == "knn"
    with pytest.raises(SystemExit):
        parse(["train", "--out", "r", "--score", "knn+magic"])


def test_evaluate_prints_auc_and_writes_metrics(trained_run, fake_fashion_dir, capsys):
    assert main(["evaluate", str(trained_run), "--data-dir", str(fake_fashion_dir), "--anchors", "20", "--k", "2"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert f"AUC {metrics['auc']:.4f}" in out
    assert metrics["n_anchors"] == 20 and metrics["k"] == 2
    # What evaluate measured is the run with 20 anchors and k = 2 on the test images of classes 7 and 9, read
    # here from the IDX files themselves; k = 1 (a control) sets another threshold, so the options took effect.
    import gzip

    from sklearn.metrics import roc_auc_score

    def idx(name, header):  # the IDX format by hand: a header, then uint8 values
        return np.frombuffer(gzip.open(fake_fashion_dir / name).read()[header:], np.uint8)

    test_images = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    test_labels = idx("t10k-labels-idx1-ubyte.gz", 8)
    kept = np.isin(test_labels, (7, 9))
    chosen = open_run(trained_run, device="cpu", n_anchors=20, k=2).detector
    scores = chosen.score_samples(test_images[kept])
    assert metrics["auc"] == pytest.approx(roc_auc_score(test_labels[kept] == 9, scores), abs=1e-9)
    assert metrics["threshold"] == pytest.approx(chosen.offset_, abs=1e-9)
    assert chosen.offset_ != pytest.approx(open_run(trained_run, device="cpu", n_anchors=20).detector.offset_)
    assert main(["evaluate", str(trained_run), "--data-dir", str(fake_fashion_dir), "--anchors", "20",
                 "--anchor-sampling", "random", "--anchor-seed", "1"]) == 0
    assert json.loads((trained_run / "metrics.json").read_text())["n_anchors"] == 20
    # The same run scored another way, without training: by the k-NN distance alone, with its own threshold.
    assert main(["evaluate", str(trained_run), "--data-dir", str(fake_fashion_dir), "--score", "knn"]) == 0
    assert "score knn)" in capsys.readouterr().out
    by_knn = json.loads((trained_run / "metrics.json").read_text())
    knn_offset = open_run(trained_run, device="cpu").detector.with_score("knn").offset_
    assert by_knn["score"] == "knn" and by_knn["threshold"] == pytest.approx(knn_offset)
    assert knn_offset != pytest.approx(json.loads((trained_run / "config.json").read_text())["detector"]["offset"])


def test_score_png_and_npy(trained_run, tmp_path, capsys):
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 255, size=(3, 28, 28)).astype(np.uint8)
    np.save(tmp_path / "batch.npy", batch)
    Image.fromarray(batch[0]).save(tmp_path / "a.png")
    Image.fromarray(batch[1]).convert("RGB").resize((56, 56)).save(tmp_path / "b.jpg")  # colour, other size
    assert main(["score", str(trained_run), str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path,score,label" and lines[1].startswith(str(tmp_path / "a.png") + ",")
    threshold = json.loads((trained_run / "config.json").read_text())["detector"]["offset"]
    for line in lines[1:]:
        _, score, label = line.split(",")
        assert label == ("anomaly" if float(score) > threshold else "normal")
    assert main(["score", str(trained_run), str(tmp_path / "a.png"), "--normalized"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    _, score, label, normalized = row.split(",")
    assert header == "path,score,label,normalized_score"
    assert float(normalized) == pytest.approx(1 / (1 + np.exp(threshold - float(score))), abs=1e-6)
    assert (float(normalized) > 0.5) == (label == "anomaly")
    assert main(["score", str(trained_run), str(tmp_path / "batch.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[3].startswith(str(tmp_path / "batch.npy") + "[2],")
    # The PNG holds the same pixels as row 0 of the batch: the same score (up to float32 batch-size effects).
    assert main(["score", str(trained_run), str(tmp_path / "a.png")]) == 0
    png_score = float(capsys.readouterr().out.splitlines()[1].split(",")[1])
    assert png_score == pytest.approx(float(lines[1].split(",")[1]), rel=1e-5)


def test_score_bad_input_is_a_clear_error(trained_run, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["score", str(trained_run), str(tmp_path / "broken.png")]) == 2
    assert "broken.png: not a readable image" in capsys.readouterr().err
    assert main(["score", str(trained_run), str(tmp_path / "absent.png")]) == 2
    assert "absent.png: no such folder, file or matching path" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "no-run"), str(tmp_path / "broken.png")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_score_to_csv_takes_folders_as_the_parquet_output_does(trained_run, tmp_path, capsys):
    images = np.random.default_rng(2).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    (tmp_path / "cam" / "deeper").mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "cam" / ("deeper" if i == 2 else "") / f"{i}.png")
    capsys.readouterr()
    assert main(["score", str(trained_run), str(tmp_path / "cam"), "--normalized"]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["path", "score", "label", "normalized_score"] and len(rows) == 4
    expected = open_run(trained_run, device="cpu").detector.score_samples(images)
    by_name = {row[0].rsplit("/", 1)[1]: float(row[1]) for row in rows[1:]}
    np.testing.assert_allclose([by_name[f"{i}.png"] for i in range(3)], expected, rtol=1e-5, atol=1e-5)


def test_benchmark_writes_both_tables(trained_run, fake_fashion_dir, capsys):
    assert main(["benchmark", str(trained_run), "--data-dir", str(fake_fashion_dir), "--anchors", "30,10",
                 "--batch-sizes", "1,20"]) == 0
    rows = json.loads((trained_run / "benchmark.json").read_text())
    assert [(r["batch_size"], r["anchors"]) for r in rows] == [(1, 30), (1, 10), (20, 30), (20, 10)]
    assert set(rows[0]) == {"runtime", "model", "anchors", "batch_size", "seconds_total", "auc", "ms_per_image"}
    assert all(r["ms_per_image"] == pytest.approx(1000 * r["seconds_total"] / 40) for r in rows)
    out = capsys.readouterr().out
    assert "Batch size 1 " in out and "Batch size 20 " in out
    anchors = len(open_run(trained_run).detector.normal_images_)  # the normal images the run keeps
    assert main(["benchmark", str(trained_run), "--data-dir", str(fake_fashion_dir), "--anchors",
                 str(anchors + 1)]) == 2


def test_reproduce_end_to_end(tmp_path, fake_fashion_dir, capsys):
    run = tmp_path / "repro"
    assert main(["reproduce", "--out", str(run), "--data-dir", str(fake_fashion_dir), "--epochs", "1",
                 "--batch-size", "32", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "metricad AUC sneaker (normal) vs ankle boot (anomaly)" in out
    assert all(name in out for name in ("raw-pixels", "pca", "iforest"))
    written = {p.name for p in run.iterdir()}
    assert {"figure.png", "metrics.json", "benchmark.json", "benchmark.md", "report.html"} <= written
    assert main(["reproduce", "--out", str(run), "--data-dir", str(fake_fashion_dir)]) == 2  # never clobbers
    assert "already exists" in capsys.readouterr().err


def test_missing_data_tells_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setattr(fashion_mnist, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(fashion_mnist, "_download", lambda d: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.delenv("METRICAD_DATA", raising=False)
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and not (tmp_path / "run").exists()


def test_runs_as_a_program():
    for module in ("metricad", "metricad.cli"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "reproduce" in result.stdout


def _compare(out, data_dir, *args):
    """Run ``metricad compare`` on the fake data; return its JSON report and markdown table."""
    assert main(["compare", "--out", str(out), "--data-dir", str(data_dir), *args]) == 0
    return json.loads((out / "compare.json").read_text()), (out / "compare.md").read_text()


def test_compare_every_method_in_one_table(tmp_path, fake_fashion_dir, capsys):
    out = tmp_path / "cmp"
    report, _ = _compare(out, fake_fashion_dir, "--seeds", "0,1", "--epochs", "1", "--device", "cpu")
    summary = {s["method"]: s for s in report["summary"]}
    experts = {f"metricad[{e}]" for e in ("knn", "fmap", "margin")}  # the default's experts, each alone
    assert set(summary) == {"raw-pixels", "pca", "iforest", "doc", "doc-lof", "binary", "binary-prob", "seed",
                            "metricad", "metricad[patch]", "pretrained"} | experts
    # The deterministic baselines are fitted once; every other method once per seed.
    assert {m: s["seeds"] for m, s in summary.items() if s["seeds"] != 2} == {"raw-pixels": 1, "pca": 1}
    assert len(report["rows"]) == 2 + 2 * (len(summary) - 2)
    # Each class of the synthetic data is a bright block at its own place: raw pixels separate them perfectly.
    assert summary["raw-pixels"]["auc_mean"] == pytest.approx(1.0)
    table = capsys.readouterr().out
    assert "| method | AUC mean ± std |" in table and "| iforest |" in table
    with pytest.raises(SystemExit):
        main(["compare", "--out", str(out), "--methods", "pca,nope"])
    assert "methods must be among" in capsys.readouterr().err


def test_compare_several_pairs_into_one_file(tmp_path, fake_fashion_dir, capsys):
    out = tmp_path / "cmp"
    report, markdown = _compare(out, fake_fashion_dir, "--pairs", "7:9,0:6", "--methods", "raw-pixels,pca",
                                "--seeds", "0")
    assert [(p["normal"], p["anomaly"]) for p in report["pairs"]] == [(7, 9), (0, 6)]
    assert "sneaker (normal, 7) vs ankle boot" in markdown and "t-shirt/top (normal, 0) vs shirt" in markdown
    with pytest.raises(SystemExit):
        main(["compare", "--out", str(out), "--pairs", "7-9"])
    assert "NORMAL:ANOMALY" in capsys.readouterr().err


def test_compare_on_a_validation_split(tmp_path, fake_fashion_dir, capsys):
    out = tmp_path / "val"
    report, markdown = _compare(out, fake_fashion_dir, "--validation", "5", "--methods", "raw-pixels",
                                "--seeds", "0")
    assert "vs sandal (anomaly, 5)" in markdown and "VALIDATION" in capsys.readouterr().out
    assert report["rows"][0]["anomaly"] == 5


def test_compare_changes_training_options_with_set(tmp_path, fake_fashion_dir, capsys):
    out = tmp_path / "cmp"
    report, _ = _compare(out, fake_fashion_dir, "--methods", "metricad", "--seeds", "0", "--epochs", "1",
                         "--set", "lr_schedule=step", "--set", "lr_milestones=[1]",
                         "--set", "model_kwargs={\"widths\": [4, 4, 4]}", "--device", "cpu")
    training = report["training"]
    assert (training["epochs"], training["lr_schedule"], training["lr_milestones"]) == (1, "step", [1])
    assert training["model_kwargs"] == {"normalize": True, "widths": [4, 4, 4]}  # merged into the default's
    assert main(["compare", "--out", str(out), "--methods", "metricad", "--set", "epochz=3"]) == 2
    assert "unknown training option(s): epochz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--out", str(out), "--set", "epochs"])
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_compare_over_several_validation_stand_ins(tmp_path, fake_fashion_dir, capsys):
    out = tmp_path / "val"
    report, markdown = _compare(out, fake_fashion_dir, "--validation", "5,8", "--methods", "raw-pixels",
                                "--seeds", "0")
    assert sorted(row["anomaly"] for row in report["rows"]) == [5, 8]
    (summary,) = report["summary"]
    assert summary["seeds"] == 2  # one run per stand-in
    assert summary["auc_mean"] == pytest.approx(sum(row["auc"] for row in report["rows"]) / 2)
    assert "stand-in anomalies sandal (5), bag (8)" in markdown


def test_compare_reuses_rows_of_an_unchanged_configuration_only(tmp_path, fake_fashion_dir, capsys):
    small = ["--methods", "binary,metricad", "--seeds", "0", "--epochs", "1", "--device", "cpu",
             "--set", "model_kwargs={\"widths\": [4, 4, 4]}"]
    first, _ = _compare(tmp_path / "a", fake_fashion_dir, *small)
    # Shifted negatives change metricad's training but not the binary baseline's: only metricad is refitted.
    second, markdown = _compare(tmp_path / "b", fake_fashion_dir, *small, "--set", "negatives=[\"vflip\"]",
                                "--reuse", str(tmp_path / "a"))
    source = str(tmp_path / "a" / "compare.json")
    before = {r["method"]: r for r in first["rows"]}
    after = {r["method"]: r for r in second["rows"]}
    for method in ("binary", "binary-prob"):
        assert after[method]["reused_from"] == source
        assert {k: v for k, v in after[method].items() if k != "reused_from"} == before[method]
    for method in ("metricad", "metricad[knn]", "metricad[fmap]", "metricad[margin]"):
        assert "reused_from" not in after[method] and after[method]["fit"] == "metricad"
    assert f"Rows reused from earlier runs of the same configuration: binary ({source})" in markdown
    assert "reused from" in capsys.readouterr().err

    # Rows measured on another split or data limit are never taken.
    assert main(["compare", "--out", str(tmp_path / "c"), "--data-dir", str(fake_fashion_dir), *small,
                 "--limit", "50", "--reuse", str(tmp_path / "a")]) == 2
    assert "was measured with limit None, this comparison uses 50" in capsys.readouterr().err
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "compare.json").write_text(json.dumps({"training": first["training"], "rows": first["rows"]}))
    for earlier, message in ((legacy, "does not record its 'split'"), (tmp_path / "none", "does not exist")):
        assert main(["compare", "--out", str(tmp_path / "c"), "--data-dir", str(fake_fashion_dir), *small,
                     "--reuse", str(earlier)]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, named", [
    (["score", "run", "x.png", "--chunk-size", "8"], "--chunk-size: for the Parquet output: pass --out DIR"),
    (["score", "run", "x.png", "--out", "o", "--actors", "2"], "--actors: for the Ray engine: pass --engine ray"),
    (["score", "part.onnx", "x.png", "--runtime", "torch"], "--runtime: a model bundle always runs on ONNX Runtime"),
    (["score", "run", "x.png", "--map-format", "tiff"], "--map-format: the format of the map files --maps DIR"),
    (["evaluate", "run", "--test-dir", "t", "--data-dir", "d"], "--data-dir: --test-dir gives the test images"),
    (["evaluate", "run", "--skip-bad-files"], "--skip-bad-files: for --test-dir's images"),
    (["evaluate", "run", "--anchor-sampling", "random"], "--anchor-sampling: these choose which --anchors N"),
    (["report", "run", "--test-dir", "t", "--data-dir", "d"], "--data-dir: --test-dir gives the test images"),
    (["compare", "--out", "o", "--draws", "5"], "--draws: draws of the few-anomaly protocol"),
    (["serve", "part.onnx", "--runtime", "onnx"], "--runtime: a model bundle always runs on ONNX Runtime"),
])
def test_an_option_a_command_would_not_use_is_refused_by_name(tmp_path, monkeypatch, capsys, args, named):
    """Refused before anything is read or written: the named files need not exist."""
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert named in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
