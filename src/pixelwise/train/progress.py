"""The training progress bar: loss, validation Dice, images/s, ETA and the remaining time budget."""

from __future__ import annotations

import logging
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pixelwise.reporting import progress_shown, stderr_console

log = logging.getLogger(__name__)


class EpochProgress:
    """One bar per epoch (steps) when bars are on (:func:`pixelwise.reporting.show_progress`, the CLI), plus one
    logged line per finished epoch. ``shown``: False on the ranks of a distributed run other than 0."""

    def __init__(self, budget_seconds: float | None = None, shown: bool = True):
        self.budget = budget_seconds
        self.last_dice = float("nan")
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=stderr_console(),
            transient=True,
            disable=not (shown and progress_shown()),
        )
        self.task = None
        self.info: str | None = None
        self.refreshed = 0.0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, info="")
        self.info = None

    def advance(self, loss, images_per_s: float, used_seconds: float) -> None:
        """One step done. ``loss`` is a number or a function giving it: it is only called when the text is
        refreshed (at most every 0.5 s), so a GPU is not made to wait for the host at every step."""
        now = time.monotonic()
        if now - self.refreshed >= 0.5 or self.info is None:
            self.refreshed = now
            value = loss() if callable(loss) else loss
            self.info = f"loss {value:.4f}  val Dice {self.last_dice:.4f}  {images_per_s:.1f} img/s"
            if self.budget:
                left = max(0.0, self.budget - used_seconds)
                self.info += f"  budget {int(left // 60)}:{int(left % 60):02d} left"
        self.progress.update(self.task, advance=1, info=self.info)

    def end_epoch(self, row: tuple, improved: bool) -> None:
        """``row``: metrics.csv's row (``train.loop.metrics_columns``: the per-set Dice after the seven)."""
        (epoch, train_loss, val_loss, val_dice, lr, seconds, ips), per_set = row[:7], row[7:]
        self.last_dice = val_dice
        mark = " *" if improved else ""
        sets = f" ({' / '.join(f'{d:.4f}' for d in per_set)})" if per_set else ""
        log.info(
            f"epoch {epoch:3d}  loss {train_loss:.4f}  val loss {val_loss:.4f}  "
            f"val Dice {val_dice:.4f}{mark}{sets}  lr {lr:.2e}  {seconds:.1f}s  {ips:.1f} img/s"
        )
