"""What every embedding model shares (the timm pattern): ``forward = forward_head(forward_features(x))``, the
mid-level map the feature-map expert and heat-maps read, the unit-length option, and the class centres a
CosFace/ArcFace loss learned (a cosine classifier over the embedding, kept with the weights it belongs to)."""

from __future__ import annotations

import torch
import torch.nn as nn


class EmbeddingModel(nn.Module):
    """A subclass builds ``self.features`` (an ``nn.Sequential``) and ``self.head``, sets ``local_depth`` (how many
    of the features' modules give the mid-level map), defines ``pool`` (the last map to the head's input) and
    ``build_kwargs`` (the arguments that build it again, from its own attributes)."""

    local_depth: int
    registry_name: str  # set by metricad.models.register_model
    # Where map cell i is centred: on input pixel stride * i (symmetrically padded convolutions) when True, else
    # on stride * i + (stride - 1) / 2 (un-padded pooling); anomaly maps are upsampled accordingly.
    aligned_cells = False

    def __init__(self, embedding_dim: int, in_channels: int, input_size: tuple[int, int], normalize: bool,
                 num_classes: int = 0, normal_label: int | None = None):
        super().__init__()
        self.embedding_dim, self.in_channels, self.input_size = embedding_dim, in_channels, tuple(input_size)
        self.normalize = normalize  # unit-length embeddings: euclidean k-NN then ranks like cosine similarity
        self.normal_label = normal_label
        # (embedding_dim, classes) or None; filled by set_class_centres after training, or by loading weights.
        self.register_buffer("class_centres", torch.zeros(embedding_dim, num_classes) if num_classes else None)

    def build_kwargs(self) -> dict:
        """The subclass's own constructor arguments (beyond the class centres), from its attributes."""
        raise NotImplementedError

    def recipe(self) -> dict:
        """What builds this model again: its registered name and arguments, the count of class centres a
        CosFace/ArcFace loss left in it included, so that its saved weights load into the rebuilt model."""
        kwargs = self.build_kwargs()
        if self.class_centres is not None:
            kwargs |= {"num_classes": int(self.class_centres.shape[1]), "normal_label": self.normal_label}
        return {"name": self.registry_name, "kwargs": kwargs}

    @classmethod
    def for_saved_weights(cls, **kwargs) -> "EmbeddingModel":
        """The model ``recipe()`` describes, before its saved weights are loaded into it."""
        return cls(**kwargs)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the first block takes it (e.g. upsampled)."""
        return x

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        """The mid-level feature map: finer than the last one, where heat-maps and the feature-map expert look."""
        return self.features[:self.local_depth](self.prepare(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, the head's input before pooling."""
        return self.features(self.prepare(x))

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        embedding = self.head(self.pool(features))
        return nn.functional.normalize(embedding, dim=1) if self.normalize else embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_views(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything the experts read, from one pass: ``local`` and ``features`` maps and the ``embedding``."""
        local = self.forward_local(x)
        features = self.features[self.local_depth:](local)
        return {"local": local, "features": features, "embedding": self.forward_head(features)}

    def set_class_centres(self, centres: torch.Tensor, normal_label: int) -> None:
        """Keep the ``(embedding_dim, classes)`` centres of a trained CosFace/ArcFace loss (``recipe()`` then counts
        them)."""
        centres = torch.as_tensor(centres).detach().float()
        if centres.ndim != 2 or centres.shape[0] != self.embedding_dim or centres.shape[1] < 2:
            raise ValueError(f"class centres must be ({self.embedding_dim}, classes >= 2), got {tuple(centres.shape)}")
        if not 0 <= normal_label < centres.shape[1]:
            raise ValueError(f"normal_label {normal_label} is not one of the {centres.shape[1]} classes")
        device = next(self.parameters()).device
        self.class_centres, self.normal_label = centres.to(device).clone(), int(normal_label)
