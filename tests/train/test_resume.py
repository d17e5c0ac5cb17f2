import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import metricad.train.loop
from metricad.cli import main
from metricad.layout import Layout
from metricad.run import partial_dir

CHECKPOINT_FILE = Layout("run").checkpoint(0).name

EPOCHS = 20  # about 0.1 s each here: the job is stopped long before it could finish
TRAIN_ARGS = ["--epochs", str(EPOCHS), "--batch-size", "16", "--device", "cpu", "--seed", "3"]


@pytest.mark.parametrize("members", [1, 2])
def test_killed_mid_epoch_then_resumed_gives_the_uninterrupted_weights(tmp_path, fake_fashion_dir, members):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    data = ["--data-dir", str(fake_fashion_dir), "--ensemble", str(members)]
    process = subprocess.Popen([sys.executable, "-m", "metricad", "train", "--out", str(killed), *data,
                                *TRAIN_ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = Layout(killed).partial.checkpoint(members - 1)  # into the last member's training
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # in the epoch after that checkpoint, or writing the next one
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not killed.exists() and checkpoint.exists()

    assert main(["train", "--resume", str(killed), "--data-dir", str(fake_fashion_dir), "--device", "cpu"]) == 0
    assert main(["train", "--out", str(reference), *data, *TRAIN_ARGS]) == 0
    for name in ("weights.safetensors", "detector.safetensors"):
        resumed, uninterrupted = load_file(str(killed / name)), load_file(str(reference / name))
        assert resumed.keys() == uninterrupted.keys()
        for key in resumed:
            assert torch.equal(resumed[key], uninterrupted[key]), f"{name}:{key} differs"
    logs = ["train.log"] if members == 1 else [f"train-{i}.log" for i in range(members)]
    assert [len((killed / log).read_text().splitlines()) for log in logs] == [EPOCHS] * members
    assert not partial_dir(killed).exists() and not list(killed.glob("checkpoint*"))


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, fake_fashion_dir, monkeypatch,
                                                                          capsys):
    real_build_loss = metricad.train.loop.build_loss

    def loss_that_breaks_in_epoch_2(*args, **kwargs):
        loss, calls = real_build_loss(*args, **kwargs), [0]
        original_forward = loss.forward

        def forward(embeddings, labels):
            calls[0] += 1
            value = original_forward(embeddings, labels)
            return value * float("nan") if calls[0] > 30 else value  # 25 steps per epoch here
        loss.forward = forward
        return loss

    monkeypatch.setattr(metricad.train.loop, "build_loss", loss_that_breaks_in_epoch_2)
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), "--data-dir", str(fake_fashion_dir), *TRAIN_ARGS])
    assert code == 2
    err = capsys.readouterr().err
    assert "loss became nan at epoch 2" in err and "last good checkpoint (epoch 1)" in err
    checkpoint = Layout(run).partial.checkpoint(0)
    assert checkpoint.exists() and not run.exists()
    from safetensors import safe_open
    with safe_open(str(checkpoint), framework="pt") as f:
        assert '"epoch": 1' in f.metadata()["metricad_checkpoint"]


def test_resume_without_a_partial_run_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, fake_fashion_dir, trained_run, capsys):
    config = json.loads((trained_run / "config.json").read_text())
    run = tmp_path / "run"
    work = partial_dir(run)
    work.mkdir()
    (work / "job.json").write_text(json.dumps({"metricad_version": "0", "data": config["data"],
                                               "training": config["training"], "detector": {}}))
    (work / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", str(run), "--data-dir", str(fake_fashion_dir), "--device", "cpu"]) == 2
    assert f"{work / CHECKPOINT_FILE}: not a readable checkpoint" in capsys.readouterr().err
    assert (work / CHECKPOINT_FILE).exists()  # kept: the user decides what to do with it


def test_a_failure_before_any_checkpoint_leaves_nothing_behind(tmp_path, fake_fashion_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--data-dir", str(fake_fashion_dir), "--epochs", "0"]) == 2
    assert "epochs 0 leaves the model as it starts" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
