"""Run folders: every path of a run, its config and its weights, in one place.

A run folder holds:

- ``config.json``: the :class:`~pixelwise.config.RunConfig`: the recipe asked for and the record of what
  training learned (classes, input size, normalisation, threshold): enough to rebuild the model and its
  preprocessing;
- ``model.safetensors``: the kept weights: the last epoch's (``keep="last"``) or the best validation epoch's;
- ``train_state.safetensors`` + ``train_state.json``: last-epoch weights, optimiser moments and loop
  counters, for ``--resume`` (written by :mod:`pixelwise.train.checkpoint`);
- ``split.json`` and ``metrics.csv`` (one row per epoch);
- ``eval-<split>/`` from ``evaluate``; ``model.onnx`` + ``model.onnx.json`` from ``export``.

A k-fold run keeps one such folder per fold in ``fold_<i>/``; the top-level ``config.json`` lists the folds.
Tensors are stored as safetensors (loading runs no code), everything else as JSON, never pickle.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pixelwise.config import Recipe, RunConfig
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write, atomic_write_json, file_sha1, first_line


@dataclass(frozen=True)
class RunFolder:
    """The files of one run (or one fold of a k-fold run) under ``path``."""

    path: Path

    CONFIG = "config.json"
    WEIGHTS = "model.safetensors"
    SPLIT = "split.json"
    METRICS = "metrics.csv"
    STATE = "train_state.safetensors"
    STATE_JSON = "train_state.json"
    ONNX = "model.onnx"

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def new_name(cls, model: str, parent: Path = Path("runs")) -> "RunFolder":
        """``runs/<YYYYmmdd-HHMMSS>-<model>``: the default folder of a new run."""
        return cls(parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}")

    # -- paths ----------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def weights_path(self) -> Path:
        return self.path / self.WEIGHTS

    @property
    def split_path(self) -> Path:
        return self.path / self.SPLIT

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def state_path(self) -> Path:
        return self.path / self.STATE

    @property
    def state_json_path(self) -> Path:
        return self.path / self.STATE_JSON

    def fold(self, index: int) -> "RunFolder":
        return RunFolder(self.path / f"fold_{index}")

    def eval_folder(self, name: str) -> Path:
        """``eval-<name>/``: what ``evaluate`` writes for a split or another data set."""
        return self.path / f"eval-{name}"

    def members(self, config: RunConfig | Recipe) -> list["RunFolder"]:
        """The folders that hold a model: the run itself, or one per fold of a k-fold ensemble."""
        recipe = config.recipe if isinstance(config, RunConfig) else config
        return [self.fold(i) for i in range(recipe.folds)] if recipe.is_ensemble else [self]

    def model_folders(self, config: RunConfig) -> list["RunFolder"]:
        """:meth:`members`, after checking that each has its weights, and that they are the bytes training
        recorded (``weights_sha1`` in the member's ``config.json``): flipped bits or swapped files are refused."""
        folders = self.members(config)
        for folder in folders:
            if not folder.weights_path.exists():
                raise PixelwiseError(
                    f"{folder.path} has no {self.WEIGHTS}: training never finished an epoch; "
                    f"continue it with `pixelwise train --resume {self.path}`"
                )
            if folder == self:
                record = config.record
            else:  # a fold records its own hash in its own config.json
                record = folder.load_config().record if folder.config_path.exists() else None
            expected = record.weights_sha1 if record is not None else None
            if expected and file_sha1(folder.weights_path) != expected:
                raise PixelwiseError(
                    f"{folder.weights_path} is not the file training wrote (its SHA-1 differs from "
                    f"weights_sha1 in {folder.config_path}): it is damaged or was replaced; "
                    f"restore it or re-run training"
                )
        return folders

    def onnx_paths(self, config: RunConfig) -> list[Path]:
        """Where ``export`` writes and the ONNX engine looks: ``model.onnx``, or ``model.fold_<i>.onnx`` per fold
        of a k-fold ensemble (a run of a single fold, ``--fold i``, is a single model)."""
        if config.is_ensemble:
            return [self.path / f"model.fold_{i}.onnx" for i in range(config.recipe.folds)]
        return [self.path / self.ONNX]

    # -- state ----------------------------------------------------------------------------------------
    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    def read_config(self) -> dict:
        """``config.json`` as a dict; a clear error when the folder is not a pixelwise run."""
        if not self.path.is_dir():
            raise PixelwiseError(
                f"run folder {self.path} does not exist: pass a folder made by `pixelwise train --out RUN`"
            )
        if not self.config_path.exists():
            raise PixelwiseError(
                f"{self.path} is not a pixelwise run (no {self.CONFIG}): pass a folder made by `pixelwise train`"
            )
        try:
            return json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PixelwiseError(
                f"{self.config_path} is not valid JSON ({first_line(error)}); restore it or re-run training"
            ) from None

    def load_config(self) -> RunConfig:
        """The run's :class:`~pixelwise.config.RunConfig` (recipe + record), type-checked."""
        return RunConfig.from_dict(self.read_config(), source=str(self.config_path))

    def load_trained_config(self) -> RunConfig:
        """The config of a run that trained far enough to be used (its record complete and checked)."""
        return self.load_config().trained(str(self.config_path))

    def write_config(self, config: RunConfig) -> None:
        atomic_write_json(self.config_path, config.to_dict())

    def train_finished(self) -> bool:
        """True when the saved train state says training ran to its end."""
        if not self.state_json_path.exists():
            return False
        try:
            return bool(json.loads(self.state_json_path.read_text())["loop"].get("finished", False))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            return False


# -- tensors ------------------------------------------------------------------------------------------


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def read_tensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a safetensors file and its metadata; a damaged file is a :class:`PixelwiseError`."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        return load_file(str(path)), metadata
    except Exception as error:  # safetensors raises several types for damaged files
        raise PixelwiseError(
            f"cannot read {what} {path}: {first_line(error)}; re-run training or restore the file"
        ) from None


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(state)``, with a one-line error when names or shapes differ."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        example = (reshaped or missing or unexpected)[0]
        raise PixelwiseError(
            f"weights {path} do not fit the model in config.json (missing {len(missing)}, unexpected "
            f"{len(unexpected)}, differently shaped {len(reshaped)} tensors, e.g. {example}); "
            f"keep each run's config.json with its weights"
        )
    model.load_state_dict(state)


def save_weights(model: nn.Module, path: Path) -> None:
    save_tensors(path, model.state_dict())


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    state, _ = read_tensors(path, "weights")
    load_matching(model, state, path)
    return model
