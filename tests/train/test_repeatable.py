"""Repeatable results: the same seed and thread count give the same weights and AUC, in separate processes (as two
users' runs are), and the run records the thread count it trained with (README, "Repeatable results")."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file


def _train_and_evaluate(run, data_dir, threads):
    for args in (["train", "--out", str(run), "--data-dir", str(data_dir), "--epochs", "2", "--batch-size", "32",
                  "--device", "cpu", "--seed", "5", "--threads", str(threads)],
                 ["evaluate", str(run), "--data-dir", str(data_dir), "--device", "cpu"]):
        result = subprocess.run([sys.executable, "-m", "metricad", *args], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((run / "metrics.json").read_text())["auc"], load_file(str(run / "weights.safetensors"))


@pytest.mark.parametrize("threads", [2])
def test_the_same_seed_and_thread_count_give_the_same_run(tmp_path, fake_fashion_dir, threads):
    first_auc, first = _train_and_evaluate(tmp_path / "first", fake_fashion_dir, threads)
    second_auc, second = _train_and_evaluate(tmp_path / "second", fake_fashion_dir, threads)
    assert first_auc == second_auc
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)
    config = json.loads((tmp_path / "first" / "config.json").read_text())
    assert config["threads"] == threads


def test_a_thread_count_below_one_is_refused(tmp_path, capsys):
    from metricad.cli import main

    assert main(["train", "--out", str(tmp_path / "run"), "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err and not (tmp_path / "run").exists()
