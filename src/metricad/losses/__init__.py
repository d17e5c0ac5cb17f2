"""Training losses: the original all-pairs triplet loss and pytorch-metric-learning's family, by name."""

from metricad.losses.factory import LOSSES, MinedLoss, build_loss
from metricad.losses.seed import SeedTripletLoss, seed_triplet_loss, seed_triplet_loss_bruteforce

__all__ = ["LOSSES", "MinedLoss", "SeedTripletLoss", "build_loss", "seed_triplet_loss",
           "seed_triplet_loss_bruteforce"]
