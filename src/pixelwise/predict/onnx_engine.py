"""The ONNX engine: a run's exported model(s) run by onnxruntime, behind the same ``RunPredictor`` as torch.

``pixelwise export RUN`` writes ``RUN/model.onnx`` (k-fold: ``RUN/model.fold_<i>.onnx``) with the
normalisation inside the graph; its input is the same float32 0..1 batch the torch engine takes
(:mod:`pixelwise.deploy.contract`).

onnxruntime runs fp32 with one intra-op pool of ``PIXELWISE_THREADS`` (default: all cores) threads, no
inter-op pool and no spinning (spinning threads would steal the cores from the rest of the pipeline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pixelwise.data.classes import activate
from pixelwise.deploy.contract import INPUT_NAME, OUTPUT_NAME, check_current
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import first_line
from pixelwise.predict.predictor import RunPredictor
from pixelwise.runs import RunFolder
from pixelwise.runtime import thread_count


def session_options(threads: int | None = None):
    """onnxruntime options: ``threads`` intra-op threads (default all cores), sequential, no spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or thread_count()
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
        raise PixelwiseError(f"cannot load {path} ({first_line(error)}): re-run `pixelwise export`") from None


def onnx_predictor(run: Path, tta: str = "none", threads: int | None = None, fold: int | None = None) -> RunPredictor:
    """The run's exported model(s) as a :class:`RunPredictor` (folds averaged, like the torch engine).

    Args:
        run: a run folder exported with ``pixelwise export RUN`` (default file locations).
        tta: test-time augmentation mode (``none``, ``flips`` or ``d4``).
        threads: intra-op threads; default ``PIXELWISE_THREADS`` or all cores.
        fold: only this fold's model of a k-fold run (out-of-fold evaluation).

    Raises:
        PixelwiseError: no export in the run folder, or one made from older weights.
    """
    folder = RunFolder(run)
    config = folder.load_trained_config()
    members = list(zip(folder.model_folders(config), folder.onnx_paths(config)))
    sessions = []
    for member, path in members if fold is None else [members[fold]]:
        if not path.exists():
            raise PixelwiseError(f"{path} does not exist: run `pixelwise export {folder.path}` first")
        check_current(path, member.weights_path, folder.path)
        sessions.append(open_session(path, threads))

    def predict_unit(unit: torch.Tensor) -> torch.Tensor:
        """float32 0..1 N×3×H×W → probabilities float32 N×K×H×W (CPU)."""
        x = np.ascontiguousarray(unit.float().cpu().numpy())
        total = None
        for session in sessions:
            logits = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            probs = activate(torch.from_numpy(logits))
            total = probs if total is None else total + probs
        return total / len(sessions)

    return RunPredictor(folder.path, config, predict_unit, tta, torch.device("cpu"), "onnx", "fp32")
