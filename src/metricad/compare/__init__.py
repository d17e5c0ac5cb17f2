"""Comparing methods on the same splits: raw-pixel and trained baselines (``baselines``), the comparison table
(``comparison``)."""
