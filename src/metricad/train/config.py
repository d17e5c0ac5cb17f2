"""A recipe checked against the other stages: its loss by name (``metricad.losses``) and a score that the loss
can feed (``metricad.scoring.spec``). ``metricad.recipe`` itself stays torch-free and knows neither."""

from __future__ import annotations

from dataclasses import replace

from metricad.losses import LOSSES, loss_entry
from metricad.recipe import TrainConfig
from metricad.scoring.spec import AUTO, ScoreSpec


def scored(config: TrainConfig, score: str | None = None) -> TrainConfig:
    """``config`` scored by ``score``, or, when none is given, by its own score unless that needs the class
    centres its loss does not learn: a loss without centres (``semi-hard``) has no margin to add and scores by
    k-NN."""
    if score:
        return replace(config, score=score)
    own = config.score
    if own != AUTO and ScoreSpec.parse(own).needs_centres and not loss_entry(config.loss).centres:
        own = "knn"
    return replace(config, score=own)


def checked(config: TrainConfig) -> TrainConfig:
    """Refuse a recipe that cannot train, naming the option (before anything is loaded or written): the recipe's
    own values, its loss, and its score (parsed here, where a recipe's text enters)."""
    config.validate()
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
    if config.score != AUTO and ScoreSpec.parse(config.score).needs_centres and not LOSSES[config.loss].centres:
        with_centres = [name for name, entry in LOSSES.items() if entry.centres]
        raise ValueError(f"score {config.score!r} needs a loss with class centres ({', '.join(with_centres)}), "
                         f"got {config.loss!r}: pass --score knn")
    return config
