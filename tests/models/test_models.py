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
    assert model.metricad_config == {"name": name, "kwargs": {"embedding_dim": 32}}


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
    assert unit.metricad_config["kwargs"]["normalize"] is True  # what a saved run rebuilds it with


def test_seed_model_is_the_original_network():
    model = create_model("seed-mobilenetv2")
    assert model.features[0][0].in_channels == 1  # MobileNetV2 built on the 1-channel input
    assert model.head.in_features == 1280 and model.head.out_features == 128
    assert model.forward_features(torch.rand(1, 1, 28, 28)).shape[-2:] == (3, 3)  # 84x84 input, stride 32


def test_registry_lists_and_rejects():
    assert {"compact-cnn", "seed-mobilenetv2"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'resnet9000'"):
        create_model("resnet9000")
