"""faiss indexes behind the same add/search interface: exact (flat), IVF-flat and HNSW, for large anchor banks.

Optional: ``pip install 'metricad[faiss]'``. faiss returns squared L2 distances; they are converted to euclidean
distances here so that every index scores alike.
"""

from __future__ import annotations

import numpy as np
import torch

FAISS_KINDS = ("flat", "ivf", "hnsw")


class FaissIndex:
    """``kind="flat"``: exact. ``"ivf"``: k-means cells (``nlist``), ``nprobe`` searched; trains on the first add().
    ``"hnsw"``: graph with ``m`` links per node, ``ef_search`` candidates per query."""

    def __init__(self, kind: str = "flat", nlist: int | None = None, nprobe: int = 16, m: int = 32,
                 ef_search: int = 128, ef_construction: int = 80):
        if kind not in FAISS_KINDS:
            raise ValueError(f"faiss index kind must be one of {', '.join(FAISS_KINDS)}, got {kind!r}")
        self.kind, self.nlist, self.nprobe = kind, nlist, nprobe
        self.m, self.ef_search, self.ef_construction = m, ef_search, ef_construction
        self._index = None

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else self._index.ntotal

    def _build(self, vectors: np.ndarray):
        import faiss

        dim = vectors.shape[1]
        if self.kind == "flat":
            return faiss.IndexFlatL2(dim)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.m)
            index.hnsw.efConstruction, index.hnsw.efSearch = self.ef_construction, self.ef_search
            return index
        # IVF: about 4 * sqrt(n) cells, the usual rule of thumb; trained on (a sample of) the first vectors.
        nlist = min(self.nlist or max(1, int(4 * np.sqrt(len(vectors)))), len(vectors))  # k-means needs n >= cells
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
        index.train(vectors[np.random.default_rng(0).permutation(len(vectors))[:256 * nlist]])
        index.nprobe = self.nprobe
        return index

    def add(self, vectors) -> None:
        vectors = _as_float32(vectors, "vectors")
        if self._index is None:
            self._index = self._build(vectors)
        elif vectors.shape[1] != self._index.d:
            raise ValueError(f"vectors have dim {vectors.shape[1]}, the index holds dim {self._index.d}")
        self._index.add(vectors)

    def serialize(self) -> torch.Tensor:
        """The built index as bytes (faiss's own format, no pickle), for a run to save."""
        import faiss

        if self._index is None:
            raise RuntimeError("the index is empty: add() vectors first")
        return torch.from_numpy(faiss.serialize_index(self._index))

    def deserialize(self, data) -> None:
        import faiss

        array = data.cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        self._index = faiss.deserialize_index(np.ascontiguousarray(array, dtype=np.uint8))
        if self.kind == "ivf":
            self._index.nprobe = self.nprobe
        elif self.kind == "hnsw":
            self._index.hnsw.efSearch = self.ef_search

    def search(self, queries, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        if self._index is None:
            raise RuntimeError("the index is empty: add() vectors first")
        queries = _as_float32(queries, "queries")
        if queries.shape[1] != self._index.d:
            raise ValueError(f"queries have dim {queries.shape[1]}, the index holds dim {self._index.d}")
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be between 1 and the number of anchors ({self.ntotal}), got {k}")
        sq_dist, idx = self._index.search(queries, k)
        return torch.from_numpy(np.sqrt(np.maximum(sq_dist, 0))), torch.from_numpy(idx)


def _as_float32(x, name: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)
