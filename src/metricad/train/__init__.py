"""Training: the loop (``loop``, one screen), checkpoints (``checkpoint``) and a whole run from a data source
(``pipeline.train_run``). Ranks under torchrun are ``metricad.distributed``: fitting a detector uses them too."""
