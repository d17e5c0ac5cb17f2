"""The greedy k-center coreset, against its definition."""

import numpy as np
import pytest
import torch

from metricad.scoring.coreset import k_center


def test_k_center_keeps_each_time_the_point_farthest_from_those_kept():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0], [0.0, 5.0]])
    kept = k_center(points, 3, seed=0)
    first = int(np.random.default_rng(0).integers(5))
    expected = [first]
    for _ in range(2):  # against the definition, from the same first point
        expected.append(int(torch.cdist(points, points[expected]).min(1).values.argmax()))
    assert kept.tolist() == sorted(expected) and 3 in kept.tolist()
    with pytest.raises(ValueError, match="between 1 and the 5 points"):
        k_center(points, 6)


def test_a_projected_coreset_covers_the_points_almost_as_well():
    """The covering radius (farthest point from its nearest kept one) of the 64-dimension projection's choice is
    within 15 % of the exact choice's on 150-dimension points, and far below a random subset's."""
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(3000, 150, generator=generator),
                        torch.randn(30, 150, generator=generator) * 0.3 + 6.0])  # a small far cluster

    def radius(indices):
        return float(torch.cdist(points, points[torch.as_tensor(indices)]).min(1).values.max())

    exact, projected = k_center(points, 200), k_center(points, 200, project_to=64)
    random = np.random.default_rng(0).choice(len(points), 200, replace=False)
    assert radius(projected) <= 1.15 * radius(exact)
    assert radius(projected) < radius(random)
    assert len(set(projected.tolist())) == 200
