"""Training losses by name (``registry``): the original all-pairs triplet loss (``seed``), pytorch-metric-learning's
triplet and class-centre losses (``metric``), DOC and binary (``one_class``). Importing this package registers them."""

from metricad.losses import metric, one_class, seed  # noqa: F401  (registration side effect)
from metricad.losses.metric import MinedLoss
from metricad.losses.one_class import BinaryLoss, DOCLoss, compactness_loss
from metricad.losses.registry import LOSSES, build_loss, loss_entry, register_loss
from metricad.losses.seed import SeedTripletLoss, seed_triplet_loss, seed_triplet_loss_bruteforce

__all__ = ["LOSSES", "BinaryLoss", "DOCLoss", "MinedLoss", "SeedTripletLoss", "build_loss", "compactness_loss",
           "loss_entry", "register_loss", "seed_triplet_loss", "seed_triplet_loss_bruteforce"]
