"""Progress bars for every step that can take more than a few seconds (reading images, embedding anchors, the
coreset, scoring): tqdm's, drawn on a terminal only, so logs and tests stay clean; without tqdm (the light
install) the steps simply run."""

from __future__ import annotations


def progress(iterable, desc: str, total: int | None = None, unit: str = "it"):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=None, mininterval=1.0)
