import pytest
import torch

from metricad.models import create_model, list_models


@pytest.mark.parametrize("name", ["compact-cnn", "seed-mobilenetv2"])
def test_models_embed_28x28_grey_images(name):
    model = create_model(name, embedding_dim=32).eval()
    x = torch.rand(2, 1, 28, 28)
    features = model.forward_features(x)
    assert features.ndim == 4  # a spatial map (what heat-maps need)
    out = model(x)
    assert out.shape == (2, 32)
    torch.testing.assert_close(model.forward_head(features), out)
    assert model.recipe()["name"] == name and model.recipe()["kwargs"]["embedding_dim"] == 32


@pytest.mark.parametrize("name, kwargs", [("compact-cnn", {"widths": (4, 8, 6), "input_size": (20, 24)}),
                                          ("seed-mobilenetv2", {"upsample": 2, "in_channels": 3})])
def test_a_model_describes_itself_and_its_recipe_builds_it_again(name, kwargs):
    """The recipe comes from the model, not from who built it: a model built directly, with class centres set
    after training, still rebuilds into one its weights load into."""
    from metricad.models import rebuild
    from metricad.models.compact_cnn import CompactCNN
    from metricad.models.seed_mobilenetv2 import SeedMobileNetV2

    model = {"compact-cnn": CompactCNN, "seed-mobilenetv2": SeedMobileNetV2}[name](embedding_dim=8, **kwargs)
    model.set_class_centres(torch.randn(8, 3), normal_label=1)
    recipe = model.recipe()
    assert recipe["kwargs"]["num_classes"] == 3 and recipe["kwargs"]["normal_label"] == 1
    again = rebuild(recipe)
    again.load_state_dict(model.state_dict(), strict=True)  # fails if the rebuilt shapes differ
    x = torch.rand(2, model.in_channels, *model.input_size)
    torch.testing.assert_close(again.eval()(x), model.eval()(x))


def test_a_model_that_does_not_describe_itself_is_refused_when_saved(tmp_path):
    import numpy as np

    from metricad import Detector
    from metricad.run import write_run

    class Plain(torch.nn.Module):  # scores, but cannot be rebuilt from a run
        in_channels, input_size = 1, (1, 4)

        def forward_views(self, x):
            return {"embedding": x.flatten(1)}

    detector = Detector(Plain(), score="knn", device="cpu").fit(np.random.default_rng(0).random((10, 1, 4)))
    with pytest.raises(ValueError, match="a Plain can be fitted and scored but not saved in a run"):
        write_run(tmp_path / "run", detector, {})
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("name", ["compact-cnn", "seed-mobilenetv2"])
def test_normalize_gives_unit_length_embeddings_in_the_same_direction(name):
    torch.manual_seed(0)
    raw = create_model(name, embedding_dim=8).eval()
    torch.manual_seed(0)
    unit = create_model(name, embedding_dim=8, normalize=True).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected, out = raw(x), unit(x)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(out, expected / expected.norm(dim=1, keepdim=True))
    assert unit.recipe()["kwargs"]["normalize"] is True  # what a saved run rebuilds it with


def test_seed_model_is_the_original_network():
    model = create_model("seed-mobilenetv2")
    assert model.features[0][0].in_channels == 1  # MobileNetV2 built on the 1-channel input
    assert model.head.in_features == 1280 and model.head.out_features == 128
    assert model.forward_features(torch.rand(1, 1, 28, 28)).shape[-2:] == (3, 3)  # 84x84 input, stride 32


def test_registry_lists_and_rejects():
    assert {"compact-cnn", "seed-mobilenetv2"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'resnet9000'"):
        create_model("resnet9000")
