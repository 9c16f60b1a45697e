"""The ONNX engine: a run's exported model(s) run by onnxruntime, behind the same ``RunPredictor`` as torch.

``pixelwise export RUN`` writes ``RUN/model.onnx`` (k-fold: ``RUN/model.fold_<i>.onnx``) with the
normalisation inside the graph (input: RGB 0..1, see :mod:`pixelwise.export`). ``RunPredictor`` hands its
function a *normalised* batch (that is what TTA transforms), so :func:`onnx_predictor` maps it back to 0..1
with the run's mean/std before the session; the round trip costs one multiply-add per pixel and changes
the graph's input by at most a few float32 ulps.

onnxruntime runs fp32 with one intra-op pool of ``PIXELWISE_THREADS`` (default: all cores) threads, no
inter-op pool and no spinning (spinning threads would steal the cores from the rest of the pipeline).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from pixelwise.data.preprocess import probabilities
from pixelwise.errors import PixelwiseError
from pixelwise.export import INPUT_NAME, OUTPUT_NAME, default_onnx_paths, file_sha1, read_sidecar
from pixelwise.predict.engine import RunPredictor, load_config, model_folders
from pixelwise.train import checkpoint


def session_options(threads: int | None = None):
    """onnxruntime options: ``threads`` intra-op threads (default all cores), sequential, no spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or int(os.environ.get("PIXELWISE_THREADS", os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def open_session(path: Path, threads: int | None = None):
    """An onnxruntime session for ``path`` on the CPU (CUDA first when onnxruntime has it)."""
    import onnxruntime as ort

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for damaged files
        raise PixelwiseError(f"cannot load {path} ({str(error).splitlines()[0]}): re-run `pixelwise export`") from None


def check_current(onnx_path: Path, weights: Path, run: Path) -> dict:
    """The sidecar of ``onnx_path``, after checking that it was exported from the current ``weights``."""
    meta = read_sidecar(onnx_path)
    if meta.get("weights_sha1") != file_sha1(weights):
        raise PixelwiseError(f"{onnx_path} was exported from other weights than {weights} (training went on "
                             f"since): re-run `pixelwise export {run}`")
    return meta


def onnx_predictor(run: Path, tta: str = "none", threads: int | None = None) -> RunPredictor:
    """The run's exported model(s) as a :class:`RunPredictor` (folds averaged, like the torch engine).

    Args:
        run: a run folder exported with ``pixelwise export RUN`` (default file locations).
        tta: test-time augmentation mode (``none``, ``flips`` or ``d4``).
        threads: intra-op threads; default ``PIXELWISE_THREADS`` or all cores.

    Raises:
        PixelwiseError: no export in the run folder, or one made from older weights.
    """
    run = Path(run)
    config = load_config(run)
    folders = model_folders(run, config)
    sessions = []
    for folder, path in zip(folders, default_onnx_paths(run, config)):
        if not path.exists():
            raise PixelwiseError(f"{path} does not exist: run `pixelwise export {run}` first")
        check_current(path, folder / checkpoint.MODEL_FILE, run)
        sessions.append(open_session(path, threads))
    mean = torch.tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1)

    def predict_normalized(x: torch.Tensor) -> torch.Tensor:
        """Normalised float32 N×3×H×W → probabilities float32 N×K×H×W (CPU)."""
        unit = np.ascontiguousarray((x.float().cpu() * std + mean).numpy())  # back to RGB 0..1, the graph's input
        total = None
        for session in sessions:
            logits = session.run([OUTPUT_NAME], {INPUT_NAME: unit})[0]
            probs = probabilities(torch.from_numpy(logits))
            total = probs if total is None else total + probs
        return total / len(sessions)

    return RunPredictor(run, config, predict_normalized, tta, torch.device("cpu"))
