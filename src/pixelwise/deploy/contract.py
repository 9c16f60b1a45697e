"""The ONNX contract: what an exported graph takes and returns, and the JSON written beside it.

Imported by both the exporter (:mod:`pixelwise.deploy.onnx_export`) and the ONNX engine
(:mod:`pixelwise.predict.onnx_engine`), so the two cannot drift apart.

- input ``image``: ``float32`` N×3×H×W, RGB, values 0..1 (uint8 pixels divided by 255). N, H and W are
  dynamic. The per-channel normalisation ``(x - mean) / std`` is *inside* the graph, and so is the zero
  padding of H and W up to the network's stride (the logits are cropped back), so any H×W is accepted.
  The model was trained on images resized to ``size``×``size`` (``fit: stretch``) or letterboxed into it
  (``fit: pad``: longer side to ``size``, centred on grey 128, the bands cut off the output before resizing
  it back); that is where it is accurate.
- output ``logits``: ``float32`` N×K×H×W. Binary runs (K = 1): ``sigmoid(logits) > threshold`` is the
  mask. Multi-class runs (K = classes): ``argmax`` over K gives the class indices.
- tiled runs (``scale`` set in the sidecar): the image is resized by ``scale`` (aspect kept) and cut into
  overlapping ``tiles.tile``-pixel windows every ``tiles.stride`` pixels (the last one flush with the border;
  padded with ``tiles.pad_value`` grey where the image is smaller), each window's probabilities weighted by a
  Gaussian (sigma = ``tiles.sigma_scale`` × tile, floor ``tiles.min_weight``), summed and divided by the summed
  weights (:mod:`pixelwise.predict.tiles`), then resized back to the image (nearest for labels).
- ``<file>.onnx.json`` beside the graph: the contract above, mean/std, threshold, classes, training size
  (and tile plan) and the SHA-1 of the weights it was made from (an export from older weights is refused).
"""

from __future__ import annotations

import json
from pathlib import Path

from pixelwise.config import RunConfig
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import file_sha1, first_line

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def sidecar_path(onnx_path: Path) -> Path:
    """``model.onnx`` → ``model.onnx.json``."""
    return onnx_path.with_name(onnx_path.name + ".json")


def sidecar(config: RunConfig, weights: Path, stride: int, opset: int, fold: int | None) -> dict:
    """The JSON written beside the ONNX file: the graph's contract and the run's preprocessing."""
    recipe, record, class_map = config.recipe, config.record, config.class_map()
    return {
        "format": "onnx",
        "opset": opset,
        "model": recipe.model,
        "fold": fold,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "channels": "RGB",
            "range": [0.0, 1.0],
            "dynamic_axes": ["batch", "height", "width"],
            "preprocessing": (
                f"resize the image by scale {record.scale:g} (bilinear, antialiased, aspect kept) and cut it into "
                "the tiles of 'tiles' (blend their probabilities with its Gaussian, then resize to the image)"
                if record.is_tiled
                else "resize the image to size x size (bilinear, antialiased)"
                if recipe.fit == "stretch"
                else "scale the image's longer side to size (bilinear, antialiased) and centre it on a "
                "size x size grey (128) square; cut the same box out of the logits"
            )
            + ", divide uint8 pixels by 255; normalisation and padding to the stride happen inside "
            "the graph",
        },
        "normalization": {
            "mean": list(record.mean),
            "std": list(record.std),
            "in_graph": True,
            "formula": "(x - mean) / std per channel, x in 0..1",
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "channels": class_map.output_channels,
            "kind": "logits",
            "activation": class_map.activation,
            "postprocessing": class_map.labelling_rule(record.threshold),
        },
        "num_classes": record.num_classes,
        "threshold": record.threshold,
        "tta": (
            "pixelwise averages 16 views by default (flips and quarter turns, at the input size and 1.25× it); "
            "the threshold was chosen on such means"
        ),
        "size": record.size,
        "fit": recipe.fit,
        "scale": record.scale,  # None: the image squashed to size x size; a factor: resized by it, then tiled
        "tiles": record.tile_plan().to_dict() if record.is_tiled else None,
        "stride": stride,
        "weights_sha1": file_sha1(weights),
    }


def read_sidecar(onnx_path: Path) -> dict:
    """The JSON beside an exported model; a clear error when it is missing or damaged."""
    path = sidecar_path(onnx_path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise PixelwiseError(f"{path} is missing (it describes {onnx_path.name}): re-run `pixelwise export`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PixelwiseError(f"{path} is not valid JSON ({first_line(error)}): re-run `pixelwise export`") from None
    if not isinstance(meta, dict):
        raise PixelwiseError(f"{path} is not an export description: re-run `pixelwise export`")
    return meta


def check_current(onnx_path: Path, weights: Path, run: Path) -> dict:
    """The sidecar of ``onnx_path``, after checking that it was exported from the current ``weights``."""
    meta = read_sidecar(onnx_path)
    if meta.get("weights_sha1") != file_sha1(weights):
        raise PixelwiseError(
            f"{onnx_path} was exported from other weights than {weights} (training went on "
            f"since): re-run `pixelwise export {run}`"
        )
    return meta
