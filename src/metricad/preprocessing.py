"""The one conversion from user arrays to model input, checked at the boundary.

``to_model_array`` is numpy only (the torch-free bundle runtime uses it); ``to_model_input`` wraps it for torch.
"""

from __future__ import annotations

import numpy as np


def _check_layout(shape: tuple, channels: int, size) -> None:
    if len(shape) != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {shape}")
    if shape[1] != channels:
        raise ValueError(f"images have {shape[1]} channel(s), the model expects {channels}")
    if size is not None and tuple(shape[2:]) != tuple(size):
        raise ValueError(f"images are {tuple(shape[2:])} pixels, the model expects {tuple(size)}")


def to_model_array(images, channels: int = 1, size: tuple[int, int] | None = None) -> np.ndarray:
    """Turn a batch into a float32 array ``(N, C, H, W)`` with values in [0, 1].

    Accepts numpy arrays (or anything ``np.asarray`` takes) of shape ``(N, H, W)`` or ``(N, C, H, W)``; uint8 is
    scaled by 1/255, floats must already lie in [0, 1]. Pure numpy: the ONNX scoring path calls it for every
    image, where a few torch calls cost more than the rest of the step (measured ~0.05 ms at batch 1).
    """
    array = np.asarray(images)
    _check_layout(array.shape[:1] + (1,) + array.shape[1:] if array.ndim == 3 else array.shape, channels, size)
    if array.ndim == 3:
        array = array[:, None]
    if array.dtype == np.uint8:
        return np.divide(array, np.float32(255), dtype=np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError("float images must lie in [0, 1] (pass uint8 for 0..255 pixel values)")
    return array


def to_model_input(images, channels: int = 1, size: tuple[int, int] | None = None):
    """``to_model_array`` as a torch tensor; a tensor input stays on its device."""
    import torch

    if not isinstance(images, torch.Tensor):
        return torch.from_numpy(to_model_array(images, channels, size))
    tensor = images.unsqueeze(1) if images.ndim == 3 else images
    _check_layout(tuple(tensor.shape), channels, size)
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    if not tensor.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {tensor.dtype}")
    tensor = tensor.float()
    if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
        raise ValueError("float images must lie in [0, 1] (pass uint8 for 0..255 pixel values)")
    return tensor
