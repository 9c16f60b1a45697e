"""Optimisers: AdamW (decoupled weight decay) by default; plain Adam without decay to replay the lesson."""

from __future__ import annotations

import torch

from pixelwise.errors import PixelwiseError

OPTIMIZERS = ("adamw", "adam")


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise PixelwiseError(f"unknown optimizer '{name}' (--optimizer): choose one of {', '.join(OPTIMIZERS)}")
