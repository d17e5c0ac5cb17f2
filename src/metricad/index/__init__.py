"""k-NN indexes behind one tiny interface: ``add(vectors)``, ``search(queries, k) -> (distances, indices)``."""

from metricad.index.exact import ExactIndex

__all__ = ["ExactIndex"]
