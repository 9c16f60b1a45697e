"""Training checkpoints for ``--resume``: the loop's counters (:class:`LoopState`), the last epoch's weights
(and their moving average, with ``--ema``) and the optimiser's moments, as safetensors + JSON (never pickle),
written atomically.

The kept weights (``model.safetensors``) and the rest of a run folder are :mod:`pixelwise.runs`'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_json
from pixelwise.runs import RunFolder, load_matching, read_tensors, save_tensors
from pixelwise.train.ema import WeightAverage


@dataclass
class LoopState:
    """Where the training loop is: saved after every epoch, restored by ``--resume``."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken
    best_dice: float = -1.0  # best validation Dice so far
    best_epoch: int = -1  # 0-based epoch of ``best_dice``
    epochs: int = 1  # planned epochs (a budget re-fits it)
    epoch_seconds: list = field(default_factory=list)
    train_seconds: float = 0.0
    finished: bool = False
    world_size: int = 1  # processes the run trained on (torchrun)

    @classmethod
    def from_dict(cls, values: dict) -> "LoopState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


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


def save_train_state(
    run: RunFolder,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loop: LoopState,
    average: WeightAverage | None = None,
) -> None:
    """Save everything ``--resume`` needs. The JSON is written last: it marks the state complete.

    The tensors file also carries the JSON document in its metadata, so that it is self-consistent even if
    an interruption falls between the two writes (new tensors beside the previous epoch's JSON).
    """
    tensors, optim_meta = optimizer_tensors(optimizer)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    meta = {"loop": asdict(loop), "optimizer": optim_meta}
    if average is not None:
        tensors.update({f"ema.{k}": v for k, v in average.module.state_dict().items()})
        meta["ema_updates"] = average.updates
    save_tensors(run.state_path, tensors, metadata={RunFolder.STATE_JSON: json.dumps(meta)})
    atomic_write_json(run.state_json_path, meta)


def load_train_state(
    run: RunFolder, model: nn.Module, optimizer: torch.optim.Optimizer, average: WeightAverage | None = None
) -> LoopState:
    """Restore model, optimiser (and the weights' moving average) from a run's train state; returns the loop
    counters. A state saved without one (a run from before ``ema`` was its default) starts the average from the
    restored weights."""
    if not run.state_json_path.exists():
        raise PixelwiseError(
            f"{run.path} has no {RunFolder.STATE_JSON}: it never finished an epoch; start a new run instead of --resume"
        )
    tensors, metadata = read_tensors(run.state_path, "train state")
    try:
        meta = json.loads(run.state_json_path.read_text())
        if RunFolder.STATE_JSON in metadata:
            # The copy inside the tensors file always matches the tensors. A JSON at another step is the
            # previous epoch's (interrupted between the two writes): trust the copy then.
            embedded = json.loads(metadata[RunFolder.STATE_JSON])
            if embedded["loop"].get("step") != meta["loop"].get("step"):
                meta = embedded
        loop, optim_meta = LoopState.from_dict(meta["loop"]), meta["optimizer"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise PixelwiseError(
            f"{run.state_json_path} is damaged ({error}); start a new run instead of --resume"
        ) from None
    load_matching(model, {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, run.state_path)
    restore_optimizer(optimizer, tensors, optim_meta)
    if average is not None:
        saved = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
        load_matching(average.module, saved or model.state_dict(), run.state_path)
        average.updates = int(meta.get("ema_updates", loop.step)) if saved else 0
    return loop
