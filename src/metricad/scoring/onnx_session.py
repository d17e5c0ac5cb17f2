"""An ONNX Runtime session, configured once for every user: the detector's ONNX runtime
(``metricad.scoring.onnx_graph``) and the torch-free model bundle (``metricad.deploy.bundle``). Torch-free."""

from __future__ import annotations

import numpy as np


def make_session(onnx_model: bytes | str, threads: int | None = None, use_cuda: bool = False,
                 spinning: bool = True):
    """An ONNX Runtime session with every graph optimisation; CUDA first when asked for and available. Spinning
    worker threads answer the next batch sooner; turn it off when other work shares the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    use_cuda = use_cuda and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
    return ort.InferenceSession(onnx_model, options, providers=providers)


def run_batches(session, x: np.ndarray, names: list[str], batch_size: int) -> tuple[np.ndarray, ...]:
    """The outputs ``names`` of ``session`` on ``x``, ``batch_size`` images per call, concatenated; for no image,
    empty arrays of the outputs' shapes (the batch axis 0)."""
    outputs = [session.run(names, {"images": x[i:i + batch_size]}) for i in range(0, len(x), batch_size)]
    if outputs:
        return tuple(np.concatenate([o[j] for o in outputs]) for j in range(len(names)))
    shapes = {output.name: output.shape for output in session.get_outputs()}
    return tuple(np.empty((0, *(d if isinstance(d, int) else 0 for d in shapes[name][1:])), np.float32)
                 for name in names)
