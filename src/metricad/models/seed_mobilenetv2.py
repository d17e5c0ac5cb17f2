"""The original network: MobileNetV2 from scratch on 28x28 grey images upsampled x3, global average pool, linear."""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import mobilenet_v2

from metricad.models.base import EmbeddingModel
from metricad.models.registry import register_model


@register_model("seed-mobilenetv2")
class SeedMobileNetV2(EmbeddingModel):
    local_depth = 2  # stem + first block: an early, high-resolution map; the last map is (1280, 3, 3)

    def __init__(self, embedding_dim: int = 128, in_channels: int = 1, upsample: int = 3,
                 input_size: tuple[int, int] = (28, 28), normalize: bool = False, num_classes: int = 0,
                 normal_label: int | None = None):
        super().__init__(embedding_dim, in_channels, input_size, normalize, num_classes, normal_label)
        self.upsample_factor = upsample
        self.upsample = nn.Upsample(scale_factor=upsample, mode="nearest")  # Keras UpSampling2D is nearest
        backbone = mobilenet_v2(weights=None)
        stem = backbone.features[0][0]
        # The original built MobileNetV2 on a 1-channel input tensor, so its first conv sees 1 channel.
        backbone.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride,
                                            stem.padding, bias=False)
        self.features = backbone.features
        self.head = nn.Linear(backbone.last_channel, embedding_dim)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))  # global average pool, as the original

    def build_kwargs(self) -> dict:
        return {"embedding_dim": self.embedding_dim, "in_channels": self.in_channels,
                "upsample": self.upsample_factor, "input_size": list(self.input_size), "normalize": self.normalize}
