"""Score names: experts joined by ``+`` (``"knn+excess-margin"``). Torch-free, for the command line and recipes.

Each expert is one piece of evidence that an image is anomalous (higher = more anomalous):
- ``knn``: distance of the image's embedding to its k nearest anchors (the normal training images);
- ``margin``: the class margin, how much more the embedding resembles a reference class than the normal one
  (by the class centres a CosFace/ArcFace loss learned); ``excess-margin``: the same, counted only where it is
  above normal (it can make an image more suspect, never vouch for it);
- ``fmap``: k-NN on the network's mid-level feature maps (PatchCore-style), which keep where parts sit;
- ``pca``: the raw pixels' reconstruction error from the normal images' principal components.
A score of several experts normalises each on normal images and averages them (``scoring.combine``).
"""

from __future__ import annotations

EXPERTS = ("knn", "margin", "excess-margin", "fmap", "pca")
MARGIN_EXPERTS = ("margin", "excess-margin")  # need the class centres of the training loss
AUTO = "auto"  # chosen from AUTO_CANDIDATES by labelled anomalies (metricad.selection)


def parse_score(score: str) -> tuple[str, ...]:
    """The expert names of ``score``, in order; a clear error for an unknown or repeated name."""
    if not isinstance(score, str) or not score:
        raise ValueError(f"score must be expert names joined by '+' ({', '.join(EXPERTS)}), got {score!r}")
    names = tuple(part.strip() for part in score.split("+"))
    unknown = [name for name in names if name not in EXPERTS]
    if unknown:
        raise ValueError(f"unknown expert(s) {', '.join(map(repr, unknown))} in score {score!r}; experts: "
                         f"{', '.join(EXPERTS)} (joined by '+')")
    if len(set(names)) != len(names) or len(set(names) & set(MARGIN_EXPERTS)) > 1:
        raise ValueError(f"score {score!r} names an expert twice (margin and excess-margin count as one)")
    return names


def needs_class_centres(score: str) -> bool:
    return any(name in MARGIN_EXPERTS for name in parse_score(score))
