"""Learning-rate schedules (:data:`SCHEDULES`): linear warm-up, then cosine decay to zero or a constant rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pixelwise.choices import Choice, choose, table

if TYPE_CHECKING:
    import torch

# Param-group key holding ``[step, factor]`` where a re-fitted decay starts (see ``WarmupCosine.total_steps``).
# It lives in the optimiser's param groups so that it is saved and restored with the optimiser state.
DECAY_FROM = "decay_from"


@dataclass(frozen=True)
class ScheduleSpec(Choice):
    """A learning-rate schedule ``--schedule`` names: :class:`WarmupCosine` with or without its decay."""

    constant: bool  # warm-up, then the peak rate for ever (no cosine decay)


SCHEDULES: dict[str, ScheduleSpec] = table(
    ScheduleSpec("cosine", "linear warm-up, then cosine decay to zero", constant=False),
    ScheduleSpec("constant", "linear warm-up, then a fixed rate (the lesson's)", constant=True),
)


class WarmupCosine:
    """Sets each parameter group's ``lr`` from the step count.

    The factor applied to each group's initial learning rate is ``(step + 1) / warmup_steps`` during
    warm-up, then a cosine from 1 to 0 at ``total_steps`` (or 1 for ever when ``constant``).

    ``total_steps`` may change during training (a time budget re-fits it after each epoch); the decay
    then continues smoothly: a new half-cosine from the current factor to 0 at the new total, so the
    learning rate never jumps.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, constant: bool = False):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.constant = constant  # the lesson's fixed learning rate: warm-up only, no decay
        self.warmup_steps = max(0, warmup_steps)
        self._total_steps = max(1, total_steps)
        self.step_count = 0
        self._apply()

    @property
    def total_steps(self) -> int:
        return self._total_steps

    @total_steps.setter
    def total_steps(self, value: int) -> None:
        value = max(1, int(value))
        if value == self._total_steps:
            return
        if self.step_count > self.warmup_steps and not self.constant:
            # Decaying already: restart the cosine from where it is now, to reach 0 at the new total.
            self._set_decay_from([self.step_count, self.factor(self.step_count)])
        self._total_steps = value
        self._apply()

    def _decay_from(self) -> tuple[int, float]:
        anchor = self.optimizer.param_groups[0].get(DECAY_FROM)
        return (int(anchor[0]), float(anchor[1])) if anchor else (self.warmup_steps, 1.0)

    def _set_decay_from(self, anchor: list) -> None:
        for group in self.optimizer.param_groups:
            group[DECAY_FROM] = anchor

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.constant:
            return 1.0
        start, height = self._decay_from()
        if step < start:  # before a re-fit (only reached by set_step backwards): the plain curve
            start, height = self.warmup_steps, 1.0
        span = max(1, self._total_steps - start)
        progress = min(1.0, (step - start) / span)
        return height * 0.5 * (1.0 + math.cos(math.pi * progress))

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


def build_schedule(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> WarmupCosine:
    """The schedule called ``name`` (a key of :data:`SCHEDULES`) over ``optimizer``'s parameter groups.

    Raises:
        PixelwiseError: for an unknown name.
    """
    spec = choose("--schedule", name, SCHEDULES)
    return WarmupCosine(optimizer, warmup_steps, total_steps, constant=spec.constant)
