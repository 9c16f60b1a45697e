"""An exponential moving average (EMA) of a network's weights, for validation and the kept model.

The averaged copy follows the trained network after every optimiser step::

    averaged ← decay · averaged + (1 − decay) · trained,    decay = min(max_decay, (1 + n) / (10 + n))

where ``n`` counts the updates so far. With ``(1 + n) / (10 + n)`` the average covers roughly the last ninth of
the steps taken, so early weights are forgotten quickly and a run's length (a faster machine fits more epochs in a
budget) changes the horizon in proportion; ``max_decay`` caps it for long runs. BatchNorm's running statistics
are averaged the same way (integer counters are copied), so the averaged network is used exactly like the trained
one: ``logits = averaged.module(x)``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

#: Cap on the per-step decay: at most about 1 / (1 − 0.999) = 1,000 steps are averaged.
MAX_DECAY = 0.999


def ema_decay(updates: int, max_decay: float = MAX_DECAY) -> float:
    """The decay of update number ``updates`` (0-based): ``min(max_decay, (1 + n) / (10 + n))``."""
    return min(max_decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """An EMA copy of ``model`` (same class, same device, evaluation mode, no gradients).

    Args:
        model: the network being trained; its current weights start the average.
        updates: updates already made (a resumed run continues its count).
    """

    def __init__(self, model: nn.Module, updates: int = 0, max_decay: float = MAX_DECAY):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = updates
        self.max_decay = max_decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights and buffers by ``1 − decay``."""
        weight = 1.0 - ema_decay(self.updates, self.max_decay)
        averaged, current = [], []
        for mine, theirs in zip(self.module.state_dict().values(), model.state_dict().values()):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.detach())
            else:  # BatchNorm's num_batches_tracked
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, current, weight)
        self.updates += 1
