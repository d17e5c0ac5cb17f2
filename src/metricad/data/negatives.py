"""Shifted negatives: geometric transforms of the normal images, trained as classes of their own.

A sneaker turned on its side is not a sneaker. Training the embedding to tell the normal class from its own
rotated copies makes it encode *where* the normal object's parts sit (a shoe's sole at the bottom, its opening
at the top), which is what separates the normal class from a close, never-seen anomaly (an ankle boot's shaft).
This is CSI's "shifting transformations" (Tack et al., 2020) used as extra negative classes. It assumes the
normal images have a canonical orientation, as aligned product photos on a line do; for parts photographed at
any angle, train without them (``negatives=[]``).
"""

from __future__ import annotations

import torch

# name -> transform of an (N, C, H, W) batch; every one keeps (H, W) for square inputs. The names are also
# metricad.recipe.NEGATIVES, for the torch-free command line.
SHIFTS = {
    "rot90": lambda x: torch.rot90(x, 1, dims=(2, 3)),
    "rot180": lambda x: torch.rot90(x, 2, dims=(2, 3)),
    "rot270": lambda x: torch.rot90(x, 3, dims=(2, 3)),
    "vflip": lambda x: torch.flip(x, dims=(2,)),
    "hflip": lambda x: torch.flip(x, dims=(3,)),
}


QUARTER_TURNS = ("rot90", "rot270")  # they swap height and width


def misfits(names, height: int, width: int) -> list[str]:
    """The transforms in ``names`` that would change the shape of a ``height`` x ``width`` input."""
    return [name for name in names if name in QUARTER_TURNS] if height != width else []


def check_fits(names, height: int, width: int) -> None:
    """Refuse quarter turns of a non-square input, whose shape they would change."""
    turns = misfits(names, height, width)
    if turns:
        raise ValueError(f"{','.join(turns)} need a square model input, this one is {height}x{width}")


def negative_label(labels, index: int) -> int:
    """The class label that the ``index``-th transform of ``add_shifted_negatives`` trains as, for training
    ``labels`` (torch or numpy): the labels after the largest one, in the transforms' order."""
    return int(labels.max()) + 1 + index


def add_shifted_negatives(images: torch.Tensor, labels: torch.Tensor, normal_label: int | None,
                          names) -> tuple[torch.Tensor, torch.Tensor]:
    """Append, for each transform in ``names``, every normal image so transformed, as a new class labelled
    ``negative_label(labels, i)`` (``labels.max() + 1``, ``+ 2``, ...). ``images`` is the model input,
    ``(N, C, H, W)``. Returns new tensors; the inputs are not changed."""
    names = list(names)
    if not names:
        return images, labels
    unknown = [name for name in names if name not in SHIFTS]
    if unknown:
        raise ValueError(f"unknown negative transform(s) {unknown}; available: {', '.join(SHIFTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"each negative transform may be named once, got {names}")
    if normal_label is None:
        raise ValueError("shifted negatives need the normal class's label: pass normal_label (or negatives=[])")
    normals = images[labels == normal_label]
    if len(normals) == 0:
        raise ValueError(f"no training image has the normal label {normal_label}")
    check_fits(names, *images.shape[2:])
    extra = [SHIFTS[name](normals) for name in names]
    extra_labels = [torch.full((len(normals),), negative_label(labels, i), dtype=labels.dtype)
                    for i in range(len(names))]
    return torch.cat([images, *extra]), torch.cat([labels, *extra_labels])
