"""Optimisers: AdamW (decoupled weight decay) by default; plain Adam without decay to replay the lesson."""

from __future__ import annotations

import torch

from pixelwise.errors import PixelwiseError

OPTIMIZERS = ("adamw", "adam")


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
    # The group at --lr first: the console and metrics.csv report param_groups[0]'s rate.
    return [{"params": rest, "lr": lr}, {"params": list(encoder.parameters()), "lr": lr * encoder_lr_scale}]


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                    encoder_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    groups = parameter_groups(model, lr, encoder_lr_scale)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise PixelwiseError(f"unknown optimizer '{name}' (--optimizer): choose one of {', '.join(OPTIMIZERS)}")
