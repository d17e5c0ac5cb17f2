"""An ONNX Runtime session, configured once for every user: the detector's ONNX runtime
(``metricad.scoring.onnx_graph``) and the torch-free model bundle (``metricad.deploy.bundle``). Torch-free."""

from __future__ import annotations


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
