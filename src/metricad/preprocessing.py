"""The one conversion from user arrays to model input, checked at the boundary."""

from __future__ import annotations

import numpy as np
import torch


def to_model_input(images, channels: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Turn a batch into a float32 tensor ``(N, C, H, W)`` with values in [0, 1].

    Accepts numpy arrays or tensors of shape ``(N, H, W)`` or ``(N, C, H, W)``; uint8 is scaled by 1/255, floats
    must already lie in [0, 1].
    """
    tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(tensor.shape)}")
    if tensor.shape[1] != channels:
        raise ValueError(f"images have {tensor.shape[1]} channel(s), the model expects {channels}")
    if size is not None and tuple(tensor.shape[2:]) != tuple(size):
        raise ValueError(f"images are {tuple(tensor.shape[2:])} pixels, the model expects {tuple(size)}")
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    if not tensor.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {tensor.dtype}")
    tensor = tensor.float()
    if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
        raise ValueError("float images must lie in [0, 1] (pass uint8 for 0..255 pixel values)")
    return tensor
