"""The scoring graph on ONNX Runtime: exported whole (models, experts, anchors, normalisation) and run in one call.

``Detector(runtime="onnx")`` scores through ``OnnxScorer``; ``metricad.deploy.export`` writes the same export,
with its metadata, as a one-file model bundle.
"""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import torch
import torch.nn as nn

from metricad.scoring.experts import KnnDistance
from metricad.scoring.onnx_session import make_session, run_batches

MAX_GRAPH_BYTES = 1 << 30  # the anchors become constants of the graph: stay well under protobuf's 2 GB limit


def export_graph(graph: nn.Module, input_spec: tuple[int, tuple[int, int]], opset: int = 17) -> bytes:
    """ONNX bytes of ``graph`` (images -> score, parts[, anomaly_map]) with a dynamic batch axis, exported from a
    CPU copy."""
    size = sum(t.numel() * t.element_size() for t in list(graph.parameters()) + list(graph.buffers()))
    if size > MAX_GRAPH_BYTES:
        raise ValueError(f"the scoring graph holds {size / 2**20:.0f} MB of anchors and weights, too many to export "
                         "as one ONNX graph: score it with runtime 'torch' (a faiss index for large banks)")
    graph = copy.deepcopy(graph).to("cpu").eval()
    for module in graph.modules():  # a faiss index is no torch op and would be traced as a constant: the graph
        if isinstance(module, KnnDistance):  # searches the same anchors exactly instead
            module.search_index_ = None
    channels, (height, width) = input_spec
    outputs = graph.output_names
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter needs no extra package (the dynamo one needs onnxscript) and handles
        # these plain graphs exactly; its tracer warns about Python ints it turns into constants (the normal label).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)  # the map's reflected edges: harmless
        torch.onnx.export(graph, (torch.zeros(1, channels, height, width),), buffer, input_names=["images"],
                          output_names=list(outputs), opset_version=opset, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]})
    return buffer.getvalue()


class OnnxScorer:
    """The exported graph in one ONNX Runtime session: ``scorer(x, batch_size) -> (scores, parts)``, with
    ``maps=True`` also the anomaly maps.

    Nothing runs between two calls, so worker threads may busy-wait for the next batch (embedding and k-NN in
    one graph measured 0.19 ms/image at batch 1 against 0.50 with the k-NN in torch; BENCHMARKS.md).
    """

    def __init__(self, graph: nn.Module, input_spec, threads: int | None = None, use_cuda: bool = False):
        self.session = make_session(export_graph(graph, input_spec), threads, use_cuda, spinning=True)

    def __call__(self, x: np.ndarray, batch_size: int, maps: bool = False) -> tuple[np.ndarray, ...]:
        return run_batches(self.session, x, ["score", "parts"] + (["anomaly_map"] if maps else []), batch_size)
