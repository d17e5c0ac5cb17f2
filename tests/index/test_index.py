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


@pytest.mark.parametrize("name", ["faiss-flat", "faiss-ivf", "faiss-hnsw"])
def test_faiss_indexes_against_numpy(name):
    pytest.importorskip("faiss")
    from metricad.index import make_index

    rng = np.random.default_rng(1)
    # Clustered like real embeddings (uniform noise in 32-d has no structure for IVF or HNSW to use).
    centres = rng.normal(size=(40, 32))
    anchors = (centres[rng.integers(0, 40, 4000)] + 0.3 * rng.normal(size=(4000, 32))).astype(np.float32)
    queries = (centres[rng.integers(0, 40, 200)] + 0.3 * rng.normal(size=(200, 32))).astype(np.float32)
    index = make_index(name)
    index.add(anchors)
    dist, idx = index.search(queries, 5)
    ref_dist, ref_idx = numpy_knn(anchors, queries, 5)
    recall_at_1 = np.mean(idx.numpy()[:, 0] == ref_idx[:, 0])
    if name == "faiss-flat":
        np.testing.assert_array_equal(idx.numpy(), ref_idx)
        np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-4, atol=1e-4)
    else:
        assert recall_at_1 >= 0.9, f"{name}: recall@1 {recall_at_1:.3f}"
        # Whatever it returns, the distances it reports are the true distances of those anchors.
        true = np.sqrt(((queries[:, None] - anchors[idx.numpy()]) ** 2).sum(-1))
        np.testing.assert_allclose(dist.numpy(), true, rtol=1e-4, atol=1e-4)
