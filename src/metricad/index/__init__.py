"""k-NN indexes behind one tiny interface: ``add(vectors)``, ``search(queries, k) -> (distances, indices)``.

Distances are euclidean. ``ExactIndex`` (torch) is the default; ``FaissIndex`` needs the ``faiss`` extra.
"""

from metricad.index.exact import ExactIndex, knn_search
from metricad.index.faiss_index import FAISS_KINDS, FaissIndex
from metricad.recipe import INDEXES


def make_index(name: str = "exact", device=None):
    if name == "exact":
        return ExactIndex(device)
    if name.startswith("faiss-") and name[len("faiss-"):] in FAISS_KINDS:
        return FaissIndex(name[len("faiss-"):])
    raise ValueError(f"index must be one of {', '.join(INDEXES)}, got {name!r}")


__all__ = ["INDEXES", "ExactIndex", "FaissIndex", "knn_search", "make_index"]
