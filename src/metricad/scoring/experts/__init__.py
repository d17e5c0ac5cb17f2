"""Experts by name: each one piece of evidence that an image is anomalous, fitted on the normal images of one
trained model (``base.Expert``). Importing this package registers the built-in ones; a new expert is a module here
with ``@register_expert("key")``, imported below, and its name declared in ``metricad.scoring.spec``."""

from metricad.scoring.experts import flow, fmap, knn, margin, patch, pixels  # noqa: F401  (registration side effect)
from metricad.scoring.experts.base import EXPERT_CLASSES, MAP_DIM, Expert, build_expert, register_expert
from metricad.scoring.experts.flow import PatchFlow
from metricad.scoring.experts.fmap import FeatureMapKnn
from metricad.scoring.experts.knn import KnnDistance
from metricad.scoring.experts.margin import ClassMargin
from metricad.scoring.experts.patch import PatchKnn
from metricad.scoring.experts.pixels import PixelPCA

__all__ = ["EXPERT_CLASSES", "MAP_DIM", "ClassMargin", "Expert", "FeatureMapKnn", "KnnDistance", "PatchFlow",
           "PatchKnn", "PixelPCA", "build_expert", "register_expert"]
