"""ONNX export of a trained run: ``pixelwise export RUN --format onnx [--out FILE]``.

What is written (atomically), by default into the run folder where ``predict --engine onnx`` finds it:

- ``model.onnx``: the network with the preprocessing inside the graph (k-fold runs: one file per fold,
  ``model.fold_<i>.onnx``);
- ``model.onnx.json`` beside it: everything a consumer needs besides the graph (input and output contract,
  mean/std, threshold, classes, training size, the SHA-1 of the weights it was made from).

The graph's contract (input ``image`` 0..1, output ``logits``) and the JSON beside it are
:mod:`pixelwise.deploy.contract`'s.

The legacy TorchScript exporter (``dynamo=False``) is used: it needs no extra package and is predictable
for plain CNNs. Every export is checked right away with onnxruntime on a batch of another size and shape
than the traced one, so a graph that silently froze a dimension is refused instead of written.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.config import RunConfig
from pixelwise.deploy.contract import INPUT_NAME, OPSET, OUTPUT_NAME, sidecar, sidecar_path
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write, atomic_write_json, first_line
from pixelwise.models import PadToStride, build_model, model_spec
from pixelwise.runs import RunFolder, load_weights

FORMATS = ("onnx",)
#: Largest |Δlogit| between torch and onnxruntime accepted by the export check, relative to max(1, |logit|).
CHECK_TOLERANCE = 1e-3


class ExportedNetwork(nn.Module):
    """What the ONNX graph computes: normalise, pad to the stride, run the network, crop.

    Forward:
        x: ``float32`` N×3×H×W, RGB in 0..1, any N, H, W.
        returns ``float32`` logits N×K×H×W.
    """

    def __init__(self, net: nn.Module, stride: int, mean, std):
        super().__init__()
        self.net = net
        self.stride = stride
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        # Unconditional (a pad of 0 is a no-op), so the traced graph computes the padding from the input's
        # shape instead of freezing the traced size's branch the way PadToStride's Python `if` would.
        pad_h = (self.stride - height % self.stride) % self.stride
        pad_w = (self.stride - width % self.stride) % self.stride
        x = F.pad((x - self.mean) / self.std, (0, pad_w, 0, pad_h))
        return self.net(x)[..., :height, :width]


def exported_network(model: nn.Module, config: RunConfig) -> ExportedNetwork:
    """Wrap a :func:`~pixelwise.models.build_model` network (fp32, eval mode) for export."""
    net = model.net if isinstance(model, PadToStride) else model
    stride = model.stride if isinstance(model, PadToStride) else model_spec(config.recipe.model).stride
    return ExportedNetwork(net, stride, config.record.mean, config.record.std).float().eval()


def _zero_pad_shortcut(x: torch.Tensor, planes: int, stride: int, spatial_dims: int = 2) -> torch.Tensor:
    """MONAI ResNet's type-A shortcut (stride-s subsampling, then zero channels up to ``planes``), traceable.

    MONAI builds the zero channels with ``torch.zeros(out.size(0), ..., *out.shape[2:])``, which the tracer
    records with the traced batch and size as constants; ``F.pad`` on the channel axis computes the same
    values from the input's shape.
    """
    out = x[(...,) + (slice(None, None, stride),) * spatial_dims]  # == avg_pool(kernel 1, stride)
    return F.pad(out, (0, 0) * spatial_dims + (0, planes - out.shape[1]))


@contextlib.contextmanager
def traceable_shortcuts(module: nn.Module):
    """Temporarily swap MONAI's ResNet type-A shortcuts (a ``functools.partial``) for :func:`_zero_pad_shortcut`."""
    swapped = []
    for sub in module.modules():
        shortcut = getattr(sub, "downsample", None)
        if (
            isinstance(shortcut, functools.partial)
            and getattr(shortcut.func, "__name__", "") == "_downsample_basic_block"
        ):
            sub.downsample = functools.partial(_zero_pad_shortcut, **shortcut.keywords)
            swapped.append((sub, shortcut))
    try:
        yield module
    finally:
        for sub, shortcut in swapped:
            sub.downsample = shortcut


def export_onnx(network: ExportedNetwork, path: Path, size: int, opset: int = OPSET) -> Path:
    """Trace ``network`` at 2×3×size×size and write an ONNX file with dynamic N, H, W (atomically).

    Raises:
        PixelwiseError: the exporter fails, or onnxruntime's logits on another batch size and image shape
            differ from torch's by more than :data:`CHECK_TOLERANCE` (a dimension was frozen).
    """
    if opset < 17:
        raise PixelwiseError(f"--opset {opset}: pixelwise exports ONNX opset 17 or newer")
    example = torch.rand(2, 3, size, size)
    dynamic = {0: "batch", 2: "height", 3: "width"}

    def write(tmp: Path) -> None:
        with traceable_shortcuts(network), torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter announces its deprecation and warns about every traced shape computation.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
                do_constant_folding=True,
            )
        check_export(network, tmp)

    try:
        return atomic_write(path, write)
    except PixelwiseError:
        raise
    except Exception as error:  # the exporter raises many types for unsupported operations
        raise PixelwiseError(
            f"ONNX export to {path} failed ({type(error).__name__}: {first_line(error)}); "
            f"this model cannot be exported, use the torch engine"
        ) from None


def check_export(network: ExportedNetwork, path: Path) -> float:
    """Compare torch and onnxruntime logits on a 3-image batch of a non-square, non-stride-multiple size.

    Returns:
        the largest |Δlogit|.
    """
    import onnxruntime as ort

    stride = network.stride
    x = torch.rand(3, 3, 3 * stride + 5, 2 * stride + 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = network(x).numpy()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    try:
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    except Exception as error:
        raise PixelwiseError(
            f"the exported graph fails on a batch of another shape ({first_line(error)}); "
            f"this model cannot be exported with dynamic shapes, use the torch engine"
        ) from None
    error = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not error <= CHECK_TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise PixelwiseError(
            f"the exported graph's logits differ from torch's by {error:.3g} on a batch of another "
            f"shape: this model does not export faithfully, use the torch engine"
        )
    return error


def export_run(run: Path, out: Path | None = None, fmt: str = "onnx", opset: int = OPSET) -> list[Path]:
    """Export a trained run's model(s) to ONNX, each with its ``.json`` sidecar.

    Args:
        run: a run folder made by ``pixelwise train`` (single or k-fold).
        out: the ONNX file to write; default ``RUN/model.onnx``. For a k-fold run, ``name.fold_<i>.onnx``
            beside ``out`` (default ``RUN/model.fold_<i>.onnx``).
        fmt: only ``"onnx"``.
        opset: ONNX opset, at least 17.

    Returns:
        the ONNX paths written, one per fold (one for a single run).

    Raises:
        PixelwiseError: not a trained run, unknown format, or a model that does not export faithfully.
    """
    if fmt not in FORMATS:
        raise PixelwiseError(f"unknown export format '{fmt}': use one of {', '.join(FORMATS)}")
    run = RunFolder(run)
    config = run.load_trained_config()
    folders = run.model_folders(config)
    if out is None:
        targets = run.onnx_paths(config)
    else:
        out = Path(out)
        if out.is_dir():
            raise PixelwiseError(f"--out {out} is a folder: pass a file name such as {out / RunFolder.ONNX}")
        targets = (
            [out.with_name(f"{out.stem}.fold_{i}{out.suffix}") for i in range(config.recipe.folds)]
            if config.is_ensemble
            else [out]
        )
    written = []
    for fold, (folder, target) in enumerate(zip(folders, targets)):
        weights = folder.weights_path
        model = load_weights(build_model(config.recipe.model, config.record.num_classes, pretrained=False), weights)
        network = exported_network(model, config)
        export_onnx(network, target, config.record.size, opset)
        atomic_write_json(
            sidecar_path(target),
            sidecar(config, weights, network.stride, opset, fold if config.is_ensemble else config.recipe.fold),
        )
        written.append(target)
    return written
