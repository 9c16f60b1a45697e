"""The shape every family of user choices shares: one frozen row per name, in one dict ``name -> row``.

A family (layouts, augmentation presets, losses, test-time augmentation modes, optimisers, schedules) subclasses
:class:`Choice` with what its rows need (a builder, a detector, views...) and lists its rows once, with
:func:`table`. From that dict derive the ``--help`` text (:func:`choices_help`), the validation of a name
(:func:`choose`) and the docs; ``name in TABLE``, ``", ".join(TABLE)`` and iteration give the names in order.

Imports nothing heavy: the CLI builds its help text from these tables at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from pixelwise.errors import PixelwiseError


@dataclass(frozen=True)
class Choice:
    """One name a user may give an option, and the one-line description ``--help`` shows for it."""

    name: str
    description: str


Row = TypeVar("Row", bound=Choice)


def table(*rows: Row) -> dict[str, Row]:
    """The rows keyed by name, in the order given (the order ``--help`` lists them).

    Raises:
        ValueError: two rows with one name (a programming error).
    """
    named = {row.name: row for row in rows}
    if len(named) != len(rows):
        raise ValueError(f"duplicate names in {[row.name for row in rows]}")
    return named


def choices_help(rows: Mapping[str, Choice], default: str | None = None) -> str:
    """``"a: what a is; b: what b is (default)"``: every name of ``rows`` with its description, for ``--help``."""
    return "; ".join(
        f"{name}: {row.description}" + (" (default)" if name == default else "") for name, row in rows.items()
    )


def choose(option: str, name: str, rows: Mapping[str, Row]) -> Row:
    """The row called ``name``.

    Raises:
        PixelwiseError: one line naming ``option`` (e.g. ``"--loss"``) and every choice, for an unknown name.
    """
    try:
        return rows[name]
    except KeyError:
        raise PixelwiseError(
            f"unknown {option.lstrip('-')} '{name}' ({option}): choose one of {', '.join(rows)}"
        ) from None
