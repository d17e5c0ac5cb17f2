import numpy as np
import pytest
import torch

from metricad.recipe import PRESETS, TrainConfig
from metricad.train import loop as training
from metricad.train.loop import train_embedding
from tests.conftest import synthetic_images


@pytest.fixture
def tiny_data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 32)
    return synthetic_images(labels, rng), labels


def test_same_seed_same_weights(tiny_data):
    images, labels = tiny_data
    config = TrainConfig(model_kwargs={"widths": (4, 4, 4), "embedding_dim": 8}, epochs=2, batch_size=32, seed=5)
    a, history = train_embedding(config, images, labels, device="cpu", progress=False)
    b, _ = train_embedding(config, images, labels, device="cpu", progress=False)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    assert len(history) == 2 and history[-1]["loss"] < history[0]["loss"]


def test_non_finite_loss_stops_with_a_clear_message(tiny_data, monkeypatch):
    images, labels = tiny_data

    class ExplodingLoss(torch.nn.Module):
        def forward(self, embeddings, labels):
            return embeddings.sum() * float("nan")

    monkeypatch.setattr(training, "build_loss", lambda *args: ExplodingLoss())
    config = TrainConfig(model_kwargs={"widths": (4, 4, 4)}, epochs=1, batch_size=32)
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1, step 1"):
        train_embedding(config, images, labels, device="cpu", progress=False)


def test_seed_preset_is_the_original_recipe():
    seed = PRESETS["seed"]
    assert (seed.model, seed.loss, seed.labels, seed.margin) == ("seed-mobilenetv2", "seed", "binary", 0.2)
    assert (seed.optimizer, seed.lr, seed.momentum, seed.epochs, seed.batch_size) == ("sgd", 1e-3, 0.9, 50, 128)
    assert (seed.lr_milestones, seed.lr_gamma) == ([25, 45], 0.1)


def test_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epochz": 3})


def test_random_shift_translates_each_image():
    x = torch.zeros(3, 1, 6, 6)
    x[:, 0, 2, 3] = 1.0  # one bright pixel
    gen = torch.Generator().manual_seed(0)
    shifted = training.random_shift(x, 2, gen)
    assert shifted.shape == x.shape
    for img in shifted[:, 0]:
        (r, c), = torch.nonzero(img).tolist()
        assert abs(r - 2) <= 2 and abs(c - 3) <= 2 and img.sum() == 1.0
    assert training.random_shift(x, 0, gen) is x


def test_onecycle_warms_up_then_anneals_to_almost_zero(tiny_data):
    images, labels = tiny_data
    config = TrainConfig(model_kwargs={"widths": (4, 4, 4), "embedding_dim": 8}, epochs=4, batch_size=32,
                         lr=1e-2, lr_schedule="onecycle")
    _, history = train_embedding(config, images, labels, device="cpu", progress=False)
    lrs = [record["lr"] for record in history]  # the lr after each epoch's last step
    assert lrs[0] > lrs[1] > lrs[2] > lrs[3]  # warm-up ends inside the first epoch (a tenth of 16 steps)
    assert lrs[3] < 1e-2 * 1e-3


@pytest.mark.parametrize("schedule", ["step", "onecycle"])
def test_interrupted_then_resumed_training_matches_an_uninterrupted_one(tiny_data, tmp_path, monkeypatch, schedule):
    images, labels = tiny_data
    config = TrainConfig(model_kwargs={"widths": (4, 4, 4), "embedding_dim": 8}, epochs=4, batch_size=32,
                         lr_schedule=schedule, lr_milestones=[2])
    reference, reference_history = train_embedding(config, images, labels, device="cpu", progress=False)

    save = training.save_checkpoint

    def save_then_die_after_epoch_2(path, epoch, *args):
        save(path, epoch, *args)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", save_then_die_after_epoch_2)
    checkpoint = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_embedding(config, images, labels, device="cpu", progress=False, checkpoint_path=checkpoint)
    resumed, history = train_embedding(config, images, labels, device="cpu", progress=False,
                                       checkpoint_path=checkpoint)
    assert [r["lr"] for r in history] == [r["lr"] for r in reference_history]
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_on_epoch_end_sees_each_epoch_with_the_model_in_eval_mode(tiny_data):
    images, labels = tiny_data
    config = TrainConfig(model_kwargs={"widths": (4, 4, 4), "embedding_dim": 8}, epochs=3, batch_size=32)
    seen = []
    _, history = train_embedding(config, images, labels, device="cpu", progress=False,
                                 on_epoch_end=lambda record, model: seen.append((record["epoch"], model.training)))
    assert seen == [(1, False), (2, False), (3, False)] and len(history) == 3


def test_negatives_add_one_class_per_transform_to_the_loss(tiny_data):
    images, labels = tiny_data  # classes 0..3
    config = TrainConfig(model_kwargs={"widths": (4, 4, 4), "embedding_dim": 8}, epochs=1, batch_size=32,
                         negatives=["rot180", "vflip"])
    _, _, criterion = train_embedding(config, images, labels, device="cpu", progress=False, normal_label=1,
                                      return_loss=True)
    assert criterion.loss.W.shape == (8, 6)  # CosFace centres: 4 classes + 2 transforms of class 1


def test_options_change_a_configuration_and_merge_its_model_options():
    base = TrainConfig(model_kwargs={"normalize": True, "embedding_dim": 8}, epochs=3)
    changed = base.with_options({"epochs": 1, "model_kwargs": {"embedding_dim": 4}})
    assert (changed.epochs, changed.model_kwargs) == (1, {"normalize": True, "embedding_dim": 4})
    assert base.with_options({"model_kwargs": {"normalize": False}}).model_kwargs["normalize"] is False
    assert base.epochs == 3 and base.model_kwargs["embedding_dim"] == 8  # the original is left as it was
    with pytest.raises(ValueError, match="model_kwargs must be a JSON object"):
        base.with_options({"model_kwargs": [4, 4]})
    with pytest.raises(ValueError, match="unknown training option"):
        base.with_options({"epoch": 1})


def test_a_margin_score_needs_a_loss_with_class_centres(tiny_data):
    images, labels = tiny_data
    for config, message in ((TrainConfig(loss="semi-hard", score="knn+margin"), "needs a loss with class centres"),
                            (TrainConfig(score="knn+magic"), "unknown expert"),
                            (TrainConfig(ensemble=0), "ensemble must be a positive number"),
                            (TrainConfig(holdout=1.0), r"holdout must be in \[0, 1\)")):
        with pytest.raises(ValueError, match=message):
            train_embedding(config, images, labels, device="cpu", progress=False)
