"""Evaluating a run: metrics and speed tables (``evaluation``), heat-maps (``explain``), the HTML report
(``report``) and the one-command reproduction of the 2019 experiment (``reproduce``)."""
