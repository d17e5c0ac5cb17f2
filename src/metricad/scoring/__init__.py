"""How a detector scores: experts (``experts``), each one piece of evidence fitted on normal images; the
combiner (``combine``) that normalises and averages them; the scoring graph (``graph``) that runs every ensemble
member's experts in torch (``onnx_graph``: the same graph on ONNX Runtime); and the score specs (``spec``,
torch-free).

Importing this package imports nothing heavy: the command line reads ``metricad.scoring.spec`` without torch.
"""
