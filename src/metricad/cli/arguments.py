"""The command line's argument types: each parses one option's text or says, by argparse's error, what it takes."""

from __future__ import annotations

import argparse

from metricad.recipe import DEFECTS, NEGATIVES, parse_setting
from metricad.scoring.spec import AUTO, ScoreSpec


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def positive_list(text: str) -> list[int]:
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def choice_list(choices, what: str):
    """An argparse type: comma-separated names, each one of ``choices``."""
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values or any(v not in choices for v in values):
            raise argparse.ArgumentTypeError(f"{what} must be among {', '.join(choices)}, got {text!r}")
        return values
    return parse


def negatives(text: str) -> list[str]:
    return [] if text.strip() == "none" else choice_list(NEGATIVES, "negative transforms (or none)")(text)


def defects(text: str) -> list[str]:
    return [] if text == "none" else choice_list(DEFECTS, "defects")(text)


def score(text: str) -> str:
    if text == AUTO:
        return text
    try:
        ScoreSpec.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def image_size(text: str) -> tuple[int, int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 4:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHT,WIDTH (pixels, at least 4), got {text!r}")
    return (values[0], values[-1])


def pair_list(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(v) for v in item.split(":")) for item in text.split(",") if item.strip()]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected NORMAL:ANOMALY pairs such as 7:9,0:6, got {text!r}")
    return pairs


def setting(text: str) -> tuple[str, object]:
    try:
        return parse_setting(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
