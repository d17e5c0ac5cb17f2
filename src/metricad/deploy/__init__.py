"""Deployment: what a trained run becomes on the line.

``bundle`` (the one-file ONNX model bundle, torch-free), ``export`` (a run written as a bundle), ``scorer`` (the
``Scorer`` interface that a bundle, a run and a ``Detector`` share, and ``load_scorer``), ``chunks`` / ``batch``
/ ``batch_ray`` (streamed, resumable batch scoring to Parquet, here or on Ray). Importing this package imports
nothing heavy: a light install scores bundles with ``metricad.deploy.bundle``.
"""
