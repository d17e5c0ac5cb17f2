"""Score specs: experts joined by ``+`` (``"knn+fmap+excess-margin"``), parsed once into a ``ScoreSpec`` that says
which fitted experts it reads, which count one-sided and whether it needs class centres. Torch-free, for the
command line and recipes.

Each expert is one piece of evidence that an image is anomalous (higher = more anomalous):
- ``knn``: distance of the image's embedding to its k nearest anchors (the normal training images);
- ``margin``: the class margin, how much more the embedding resembles a reference class than the normal one
  (by the class centres a CosFace/ArcFace loss learned); ``excess-margin``: the same, counted only where it is
  above normal (it can make an image more suspect, never vouch for it);
- ``fmap``: k-NN on the network's mid-level feature maps (PatchCore-style), which keep where parts sit;
- ``pca``: the raw pixels' reconstruction error from the normal images' principal components;
- ``patch``: every patch of the feature maps against a memory bank of normal patches, the image scoring as its
  worst patch (PatchCore): small defects stay visible.
A score of several experts normalises each on normal images and averages them (``scoring.combine``).
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"  # chosen from a fixed list of specs by labelled anomalies (metricad.selection)


@dataclass(frozen=True)
class ExpertName:
    """A name a score may use: the fitted expert it reads (``scoring.experts``' registry key), whether it counts
    only above its normal mean, and whether it reads the class centres of a CosFace/ArcFace loss."""

    name: str
    reads: str
    one_sided: bool = False
    needs_centres: bool = False


EXPERT_NAMES: dict[str, ExpertName] = {}


def declare_expert(name: str, reads: str | None = None, one_sided: bool = False,
                   needs_centres: bool = False) -> ExpertName:
    """Make ``name`` usable in a score (the expert class it reads is registered in ``scoring.experts``)."""
    EXPERT_NAMES[name] = ExpertName(name, reads or name, one_sided, needs_centres)
    return EXPERT_NAMES[name]


declare_expert("knn")
declare_expert("margin", needs_centres=True)
declare_expert("excess-margin", reads="margin", one_sided=True, needs_centres=True)
declare_expert("fmap")
declare_expert("pca")
declare_expert("patch")
declare_expert("flow")
EXPERTS = tuple(EXPERT_NAMES)


@dataclass(frozen=True)
class ScoreSpec:
    """The experts of one score, in order. ``ScoreSpec.parse("knn+excess-margin")``; ``str(spec)`` gives the
    text back."""

    names: tuple[str, ...]

    @classmethod
    def parse(cls, score: "str | ScoreSpec") -> "ScoreSpec":
        """A clear error for an unknown name, or for two names reading the same expert."""
        if isinstance(score, ScoreSpec):
            return score
        if not isinstance(score, str) or not score:
            raise ValueError(f"score must be expert names joined by '+' ({', '.join(EXPERTS)}), got {score!r}")
        names = tuple(part.strip() for part in score.split("+"))
        unknown = [name for name in names if name not in EXPERT_NAMES]
        if unknown:
            raise ValueError(f"unknown expert(s) {', '.join(map(repr, unknown))} in score {score!r}; experts: "
                             f"{', '.join(EXPERTS)} (joined by '+')")
        reads = [EXPERT_NAMES[name].reads for name in names]
        if len(set(reads)) != len(reads):
            raise ValueError(f"score {score!r} names an expert twice (margin and excess-margin count as one)")
        return cls(names)

    def __str__(self) -> str:
        return "+".join(self.names)

    @property
    def keys(self) -> tuple[str, ...]:
        """The fitted expert each name reads, in order (distinct)."""
        return tuple(EXPERT_NAMES[name].reads for name in self.names)

    @property
    def one_sided(self) -> tuple[bool, ...]:
        return tuple(EXPERT_NAMES[name].one_sided for name in self.names)

    @property
    def needs_centres(self) -> bool:
        return any(EXPERT_NAMES[name].needs_centres for name in self.names)

    def columns(self, fitted: list[str], members: int) -> list[int]:
        """Where this spec's experts sit among raw scores laid out as ``members`` x ``fitted`` expert keys."""
        return [m * len(fitted) + fitted.index(key) for m in range(members) for key in self.keys]

