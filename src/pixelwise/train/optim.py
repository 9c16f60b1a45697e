"""Optimisers, one row each in :data:`OPTIMIZERS`: AdamW (decoupled weight decay) by default; plain Adam without
decay to replay the lesson."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pixelwise.choices import Choice, choose, table

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the CLI lists OPTIMIZERS in its --help without loading torch.


def parameter_groups(model: torch.nn.Module, lr: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """The optimiser's parameter groups: one at ``lr``; or, when ``encoder_lr_scale != 1`` and the network has a
    pretrained encoder (:func:`pixelwise.models.pretrained_encoder`), the rest (decoder, head) at ``lr`` and then the
    encoder at ``lr * encoder_lr_scale``. The schedule scales every group's rate by the same factor."""
    from pixelwise.models import pretrained_encoder

    # Scale 1 keeps the single group, so the optimiser state of runs saved before the option still resumes.
    encoder = pretrained_encoder(model) if encoder_lr_scale != 1.0 else None
    if encoder is None:
        return [{"params": list(model.parameters()), "lr": lr}]
    in_encoder = {id(p) for p in encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in in_encoder]
    # The group at --lr first: the epoch log lines and metrics.csv report param_groups[0]'s rate.
    return [{"params": rest, "lr": lr}, {"params": list(encoder.parameters()), "lr": lr * encoder_lr_scale}]


def _adamw(groups: list[dict], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    import torch

    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def _adam(groups: list[dict], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    import torch

    return torch.optim.Adam(groups, lr=lr)  # the lesson's: no weight decay, whatever --weight-decay says


@dataclass(frozen=True)
class OptimizerSpec(Choice):
    """An optimiser ``--optimizer`` names."""

    build: Callable[[list[dict], float, float], torch.optim.Optimizer]  # (parameter groups, lr, weight decay)


OPTIMIZERS: dict[str, OptimizerSpec] = table(
    OptimizerSpec("adamw", "AdamW (decoupled weight decay, --weight-decay)", _adamw),
    OptimizerSpec("adam", "Adam without weight decay (the lesson's)", _adam),
)


def build_optimizer(
    model: torch.nn.Module, name: str, lr: float, weight_decay: float, encoder_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """The optimiser called ``name`` (a key of :data:`OPTIMIZERS`) over :func:`parameter_groups`.

    Raises:
        PixelwiseError: for an unknown name.
    """
    spec = choose("--optimizer", name, OPTIMIZERS)
    return spec.build(parameter_groups(model, lr, encoder_lr_scale), lr, weight_decay)
