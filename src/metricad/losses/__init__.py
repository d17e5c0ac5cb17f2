"""Training losses by name: the original all-pairs triplet loss, pytorch-metric-learning's family, DOC, binary."""

from metricad.losses.factory import LOSSES, LOSSES_WITH_CENTRES, MinedLoss, build_loss
from metricad.losses.one_class import BinaryLoss, DOCLoss, compactness_loss
from metricad.losses.seed import SeedTripletLoss, seed_triplet_loss, seed_triplet_loss_bruteforce

__all__ = ["LOSSES", "LOSSES_WITH_CENTRES", "BinaryLoss", "DOCLoss", "MinedLoss", "SeedTripletLoss",
           "build_loss", "compactness_loss", "seed_triplet_loss", "seed_triplet_loss_bruteforce"]
