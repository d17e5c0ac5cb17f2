import numpy as np
import pytest

from metricad.index import ExactIndex


def numpy_knn(anchors, queries, k):
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - anchors[None, :, :]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


@pytest.mark.parametrize("k", [1, 5])
def test_exact_index_matches_numpy(k):
    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    index = ExactIndex()
    index.add(anchors[:300])
    index.add(anchors[300:])  # add() appends
    dist, idx = index.search(queries, k)
    ref_dist, ref_idx = numpy_knn(anchors, queries, k)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)


def test_exact_index_rejects_bad_input():
    index = ExactIndex()
    with pytest.raises(RuntimeError, match="empty"):
        index.search(np.zeros((1, 4), np.float32))
    index.add(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="dim 5"):
        index.search(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 4), np.float32), k=4)
    with pytest.raises(ValueError, match="2-D"):
        index.add(np.zeros(4, np.float32))
