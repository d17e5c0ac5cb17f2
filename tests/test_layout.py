"""The run directory's file names come from one place: a trained run holds exactly the files its Layout names."""

import json

from metricad.layout import Layout


def test_a_trained_run_holds_the_files_its_layout_names(trained_run):
    layout = Layout(trained_run)
    members = json.loads(layout.config.read_text())["training"]["ensemble"]
    logs = [layout.log(i, members) for i in range(members)]
    for path in (layout.config, layout.weights, layout.detector, *logs):
        assert path.is_file(), path
    assert layout.partial.root == trained_run.parent / f".{trained_run.name}.partial"
    assert not layout.partial.root.exists() and not Layout(trained_run).checkpoints()


def test_members_have_their_own_logs_and_checkpoints(tmp_path):
    layout = Layout(tmp_path / "run")
    assert layout.log(0, 1).name == "train.log" and layout.log(1, 2).name == "train-1.log"
    assert layout.checkpoint(1).name == "checkpoint-1.safetensors"
    layout.root.mkdir()
    for member in (1, 0):
        layout.checkpoint(member).write_bytes(b"")
    assert [p.name for p in layout.checkpoints()] == ["checkpoint-0.safetensors", "checkpoint-1.safetensors"]
