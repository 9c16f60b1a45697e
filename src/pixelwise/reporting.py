"""How library code tells people what it is doing, without printing.

* Messages go through :mod:`logging`, one logger per module (``log = logging.getLogger(__name__)``, all under
  ``pixelwise``). The library installs no handler of its own, so the Python API is quiet unless its caller
  configures logging; the CLI calls :func:`use_cli_output` (a rich handler on stderr, progress bars on); the
  server keeps its JSON access lines (:mod:`pixelwise.serve.server`).
* Anything slow wraps its loop in :func:`progress`: a transient rich bar on stderr when the CLI asked for bars,
  the plain iterable otherwise (the API, tests, the server, ranks other than 0 of a distributed run).
* Tables and summaries meant for a terminal are built as rich renderables by the library and printed by the
  CLI (:func:`pixelwise.cli` owns the console).
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

#: The root of every pixelwise logger.
LOGGER = "pixelwise"

_bars = False  # progress bars on stderr: set by the CLI
_console = None


def stderr_console():
    """The one rich console on stderr that log lines and progress bars share, so a bar redraws below a line
    logged while it runs instead of through it. (Rich resolves ``sys.stderr`` at each write: capture works.)"""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def show_progress(enabled: bool = True) -> None:
    """Turn :func:`progress` bars on (the CLI) or off (the default: the library is quiet)."""
    global _bars
    _bars = enabled


def progress_shown() -> bool:
    """True when :func:`progress` draws bars (the CLI on an interactive terminal or in CI logs)."""
    return _bars


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """``items``, with a transient progress bar on stderr when bars are on (:func:`show_progress`)."""
    if not _bars:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True, console=stderr_console())


class ConsoleHandler(logging.Handler):
    """Log records printed on :func:`stderr_console` as plain lines (rich markup such as ``[bold]`` rendered),
    warnings prefixed with ``warning:``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.WARNING and not text.startswith("warning"):
                text = f"[yellow]warning:[/] {text}"
            stderr_console().print(text, highlight=False, soft_wrap=True)
        except Exception:  # a broken stderr must not break the work being logged
            self.handleError(record)


def use_cli_output(verbose: bool = False) -> None:
    """What the CLI shows: pixelwise's log messages on stderr (INFO and up, DEBUG with ``verbose``) and
    progress bars."""
    handler = ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [h for h in logger.handlers if not isinstance(h, ConsoleHandler)] + [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    show_progress(sys.stderr is not None)
