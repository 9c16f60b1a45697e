"""Run folders and checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A run folder holds:

- ``config.json``: the :class:`~pixelwise.train.config.TrainConfig` plus what was learned about the data
  (number of classes, chosen threshold) — enough to rebuild the model and its preprocessing;
- ``model.safetensors``: the weights of the best epoch (by validation Dice);
- ``train_state.safetensors`` + ``train_state.json``: last-epoch weights, optimiser moments and loop
  counters, for ``--resume``;
- ``split.json`` and ``metrics.csv`` (one row per epoch).

Every file is written atomically, so an interrupted run leaves the last complete checkpoint behind.
For k-fold runs, each fold has its own sub-folder ``fold_<i>/`` with the same files; the top-level
``config.json`` lists the folds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write, atomic_write_json

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def _read_tensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a safetensors file and its metadata; a damaged file is a :class:`PixelwiseError`."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        return load_file(str(path)), metadata
    except Exception as error:  # safetensors raises several types for damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PixelwiseError(f"cannot read {what} {path}: {reason}; re-run training or restore the file") from None


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
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
    state, _ = _read_tensors(path, "weights")
    _load_matching(model, state, path)
    return model


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state into flat named tensors (for safetensors) and JSON-able scalars."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_train_state(run: Path, model: nn.Module, optimizer: torch.optim.Optimizer, loop_state: dict) -> None:
    """Save everything ``--resume`` needs. The JSON is written last: it marks the state complete.

    The tensors file also carries the JSON document in its metadata, so that it is self-consistent even if
    an interruption falls between the two writes (new tensors beside the previous epoch's JSON).
    """
    tensors, optim_meta = optimizer_tensors(optimizer)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    meta = {"loop": loop_state, "optimizer": optim_meta}
    save_tensors(run / STATE_FILE, tensors, metadata={STATE_JSON: json.dumps(meta)})
    atomic_write_json(run / STATE_JSON, meta)


def load_train_state(run: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimiser from a run's train state; returns the loop counters."""
    if not (run / STATE_JSON).exists():
        raise PixelwiseError(f"{run} has no {STATE_JSON}: it never finished an epoch; start a new run instead of --resume")
    tensors, metadata = _read_tensors(run / STATE_FILE, "train state")
    try:
        meta = json.loads((run / STATE_JSON).read_text())
        if STATE_JSON in metadata:
            # The copy inside the tensors file always matches the tensors. A JSON at another step is the
            # previous epoch's (interrupted between the two writes): trust the copy then.
            embedded = json.loads(metadata[STATE_JSON])
            if embedded["loop"].get("step") != meta["loop"].get("step"):
                meta = embedded
        loop, optim_meta = meta["loop"], meta["optimizer"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise PixelwiseError(f"{run / STATE_JSON} is damaged ({error}); start a new run instead of --resume") from None
    _load_matching(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, run / STATE_FILE)
    restore_optimizer(optimizer, tensors, optim_meta)
    return loop


def train_finished(run: Path) -> bool:
    """True when the run's saved train state says training ran to its end."""
    path = Path(run) / STATE_JSON
    return path.exists() and json.loads(path.read_text())["loop"].get("finished", False)


def read_config(run: Path) -> dict:
    """Read ``RUN/config.json``; a clear error when ``run`` is not a pixelwise run folder."""
    run = Path(run)
    path = run / CONFIG_FILE
    if not run.is_dir():
        raise PixelwiseError(f"run folder {run} does not exist: pass a folder made by `pixelwise train --out RUN`")
    if not path.exists():
        raise PixelwiseError(f"{run} is not a pixelwise run (no {CONFIG_FILE}): pass a folder made by `pixelwise train`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PixelwiseError(f"{path} is not valid JSON ({error}); restore it or re-run training") from None


def write_config(run: Path, config: dict) -> None:
    atomic_write_json(Path(run) / CONFIG_FILE, config)
