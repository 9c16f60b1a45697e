"""Learning-rate schedule: linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """Sets each parameter group's ``lr`` from the step count.

    ``total_steps`` may change during training (a time budget re-fits it); the decay then
    continues smoothly from the current step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                 constant: bool = False):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.constant = constant  # the lesson's fixed learning rate: warm-up only, no decay
        self.warmup_steps = max(0, warmup_steps)
        self.total_steps = max(1, total_steps)
        self.step_count = 0
        self._apply()

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.constant:
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def set_step(self, step: int) -> None:
        self.step_count = step
        self._apply()
