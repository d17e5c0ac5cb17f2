"""Adding a loss or a data source is one registration: a loss and a source defined here (as a new file would)
train a whole run through ``train_run`` and the CLI's own machinery, and the run reopens from its description."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn as nn

from metricad.data.sources import SOURCES, register_source, source_from_data
from metricad.data.split import AnomalySplit
from metricad.layout import Layout
from metricad.losses import LOSSES, register_loss
from metricad.recipe import TrainConfig
from metricad.run import open_run
from metricad.train.config import checked, scored
from metricad.train.pipeline import train_run


class PullPushLoss(nn.Module):
    """Normal embeddings pulled to their mean, the others pushed at least ``margin`` from it."""

    def __init__(self, margin):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings, labels):
        normal = labels == 0
        centre = embeddings[normal].mean(0)
        pull = (embeddings[normal] - centre).pow(2).sum(1).mean()
        push = torch.relu(self.margin - (embeddings[~normal] - centre).norm(dim=1)).pow(2).mean()
        return pull + push


def _blocks(rng, n, place):
    images = rng.integers(0, 40, (n, 16, 16)).astype(np.uint8)
    images[:, place:place + 6, place:place + 6] = 230
    return images


@dataclass
class BlockArrays:
    """Normal images with a bright block top left, reference images with it bottom right, made from a seed."""

    seed: int = 0

    @classmethod
    def from_data(cls, data, data_dir=None):
        return cls(data["seed"])

    def check(self, chooses_with_labels, threshold_mode="contamination"):
        if chooses_with_labels:
            raise ValueError("block arrays have no labelled validation images")

    def adapt(self, config):
        return config.with_options({"holdout": 0.2, "model_kwargs": {"input_size": [16, 16], "in_channels": 1}})

    def describe(self):
        return {"dataset": "test-block-arrays", "seed": self.seed}

    def load(self):
        rng = np.random.default_rng(self.seed)
        normal, reference, held = _blocks(rng, 48, 1), _blocks(rng, 48, 9), _blocks(rng, 12, 1)
        train = np.concatenate([normal, reference])
        classes = np.repeat([0, 1], 48)
        empty = np.empty((0, 16, 16), np.uint8)
        return AnomalySplit(0, -1, train, classes, normal, empty, np.empty(0, np.int64), holdout_images=held), []


@pytest.fixture
def registered():
    register_loss("test-pull-push")(lambda num_classes, embedding_dim, margin, normal_label: PullPushLoss(1.0))
    register_source("test-block-arrays")(BlockArrays)
    yield
    LOSSES.pop("test-pull-push")
    SOURCES.pop("test-block-arrays")


def test_a_new_loss_and_a_new_source_train_a_run(registered, tmp_path):
    config = scored(TrainConfig(loss="test-pull-push", epochs=2, batch_size=16, shift=0))
    assert config.score == "knn"  # no class centres: scored by k-NN
    out = train_run(tmp_path / "run", config, BlockArrays(seed=3), device="cpu", progress=False)
    saved = json.loads(Layout(out).config.read_text())
    assert saved["data"] == {"dataset": "test-block-arrays", "seed": 3}
    assert saved["training"]["loss"] == "test-pull-push" and saved["training"]["holdout"] == 0.2
    run = open_run(out)
    rng = np.random.default_rng(99)
    scores = run.detector.score_samples(np.concatenate([_blocks(rng, 10, 1), _blocks(rng, 10, 9)]))
    assert scores[10:].min() > scores[:10].max()  # the reference block is far from every normal anchor
    assert isinstance(source_from_data(saved["data"]), BlockArrays)
    np.testing.assert_array_equal(run.split().anchor_images, BlockArrays(3).load()[0].anchor_images)


def test_registering_a_taken_name_or_using_an_unknown_one_fails(registered):
    with pytest.raises(ValueError, match="loss 'cosface' is already registered"):
        register_loss("cosface")(lambda *a: None)
    with pytest.raises(ValueError, match="data source 'folders' is already registered"):
        register_source("folders")(BlockArrays)
    with pytest.raises(ValueError, match="unknown data source 'nowhere'; available: fashion-mnist, folders"):
        source_from_data({"dataset": "nowhere"})
    with pytest.raises(ValueError, match="loss must be one of .*test-pull-push, got 'nope'"):
        checked(TrainConfig(loss="nope"))
    with pytest.raises(ValueError, match="needs a loss with class centres \\(arcface, cosface\\), got 'test-pull"):
        checked(TrainConfig(loss="test-pull-push", score="knn+excess-margin"))
