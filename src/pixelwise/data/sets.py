"""Several data sets trained as one (``--data A --data B``).

Each set is found in its own layout (:func:`~pixelwise.data.layouts.find_pairs`) and split on its own, with the
run's seed, exactly as a run on that set alone would split it: adding a set never moves another set's test
images, so a two-set run's numbers on set A compare with a run on A alone. The sets' pairs then share one
index: a pair's id is ``NAME/ID`` (``NAME`` the set's folder name, made unique) and ``Pair.source`` is ``NAME``,
which the loop (per-set validation, epochs that draw each set as often as the smallest, or by ``--data-weights``),
``evaluate`` and the report group by.

A single set is left as it is: ids without a prefix, ``source`` None, the index of ``find_pairs``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from pixelwise.data.layouts import DatasetIndex, Pair, find_pairs
from pixelwise.data.split import SPLIT_NAMES, make_split
from pixelwise.errors import PixelwiseError

log = logging.getLogger(__name__)

#: Between a set's name and a pair's own id in a multi-set run.
SEPARATOR = "/"


def set_names(roots: list[Path]) -> list[str]:
    """One short name per data set: its folder (or CSV) name, with ``-2``, ``-3``... where two are equal."""
    names: list[str] = []
    for root in roots:
        base = Path(root).expanduser().resolve().stem or "data"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def find_sets(roots: list[str | Path], layout: str | None = None) -> DatasetIndex:
    """The pairs of one or several data sets as one index.

    Args:
        roots: data set folders (or CSV files), each in any layout ``find_pairs`` reads.
        layout: a layout forced for every set (None: each set's own is detected).

    Returns:
        ``find_pairs(roots[0])`` for one set. For several: pairs with ids ``NAME/ID`` and ``source`` NAME; every
        set's problems; the sets' own splits (prefixed) when every set has one; the classes when all sets
        declare the same (else None: counted from the masks).

    Raises:
        PixelwiseError: a set that is missing or has no known layout (from ``find_pairs``, naming it).
    """
    roots = [Path(root) for root in roots]
    if len(roots) == 1:
        return find_pairs(roots[0], layout=layout)
    indexes = [find_pairs(root, layout=layout) for root in roots]
    names = set_names(roots)
    pairs = [
        dataclasses.replace(pair, id=f"{name}{SEPARATOR}{pair.id}", source=name)
        for name, index in zip(names, indexes)
        for pair in index.pairs
    ]
    problems = [
        dataclasses.replace(problem, pair_id=f"{name}{SEPARATOR}{problem.pair_id}") if problem.pair_id else problem
        for name, index in zip(names, indexes)
        for problem in index.problems
    ]
    split = None
    if all(index.split is not None for index in indexes):
        split = {
            part: [f"{name}{SEPARATOR}{i}" for name, index in zip(names, indexes) for i in index.split.get(part, [])]
            for part in SPLIT_NAMES
        }
    classes = indexes[0].classes if all(index.classes == indexes[0].classes for index in indexes) else None
    log.info("data sets: " + ", ".join(f"{name} ({len(index.pairs)} pairs)" for name, index in zip(names, indexes)))
    return DatasetIndex(
        root=roots[0],
        layout="+".join(index.layout for index in indexes),
        pairs=pairs,
        problems=problems,
        split=split,
        classes=classes,
    )


def own_id(pair: Pair) -> str:
    """The pair's id within its own data set (without the ``NAME/`` of a multi-set run)."""
    return pair.id[len(pair.source) + len(SEPARATOR) :] if pair.source else pair.id


def split_sets(pairs: list[Pair], **split_options) -> dict[str, list[str]]:
    """:func:`~pixelwise.data.split.make_split` of each set on its own (its own ids, the same seed and ratios),
    joined: a set's images land in the parts a run on that set alone would put them in.

    Args:
        pairs: the run's usable pairs (``source`` set for a multi-set run; else split as one set).
        split_options: ``seed``, ``ratios``, ``folds``, ``fold`` of ``make_split``.
    """
    sources = sorted({pair.source for pair in pairs if pair.source})
    if not sources:
        return make_split(pairs, **split_options)
    joined: dict[str, list[str]] = {part: [] for part in SPLIT_NAMES}
    for source in sources:
        members = [dataclasses.replace(pair, id=own_id(pair)) for pair in pairs if pair.source == source]
        try:
            own = make_split(members, **split_options)
        except PixelwiseError as error:
            raise PixelwiseError(f"data set {source}: {error}") from None
        for part in SPLIT_NAMES:
            joined[part] += [f"{source}{SEPARATOR}{i}" for i in own[part]]
    return {part: sorted(ids) for part, ids in joined.items()}


def set_index(pairs: list[Pair], names: tuple[str, ...]) -> torch.Tensor | None:
    """int64 (N,) position in ``names`` of each pair's set; None when the run has one set."""
    if not names:
        return None
    position = {name: i for i, name in enumerate(names)}
    return torch.tensor([position[pair.source] for pair in pairs], dtype=torch.int64)


def set_weights(sets: torch.Tensor | None, weights: tuple[float, ...]) -> tuple[float, ...]:
    """The weights an epoch draws the sets with: ``weights`` (``--data-weights``) when given; without them, on
    a run of several sets, balanced — each set drawn as many images an epoch as the smallest set has (weight
    smallest / own count), so a large set does not crowd out a small one within a time budget; () for one set.

    Measured (docs/experiments.md, people on two sets, 15 minutes): ccp-people 703 + portraits 1,044 → Dice
    0.9527 / 0.9684 every image once, 0.9569 / 0.9686 balanced.
    """
    if sets is None or weights:
        return tuple(weights)
    counts = torch.bincount(sets).tolist()
    smallest = min(c for c in counts if c > 0)
    return tuple(smallest / c if c else 1.0 for c in counts)


def epoch_order(n: int, sets: torch.Tensor | None, weights: tuple[float, ...]) -> torch.Tensor:
    """The training images of one epoch, shuffled (int64 indices; uses torch's global generator).

    Each image of set ``s`` is drawn ``w[s]`` times an epoch, ``w`` = :func:`set_weights` (balanced without
    ``weights``): the whole part of the weight as repeats, the fraction as a random subset (0.5: a different
    half each epoch). One set, or weights all 1: ``torch.randperm(n)``, every image once.
    """
    weights = set_weights(sets, weights)
    if sets is None or not weights or all(w == 1 for w in weights):
        return torch.randperm(n)
    chosen = []
    for s, weight in enumerate(weights):
        members = torch.nonzero(sets == s).flatten()
        whole, part = int(weight), weight - int(weight)
        chosen += [members] * whole
        if part > 0:
            chosen.append(members[torch.randperm(len(members))[: round(part * len(members))]])
    drawn = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.int64)
    return drawn[torch.randperm(len(drawn))]


def epoch_length(n: int, sets: torch.Tensor | None, weights: tuple[float, ...]) -> int:
    """How many images :func:`epoch_order` draws an epoch."""
    weights = set_weights(sets, weights)
    if sets is None or not weights:
        return n
    counts = torch.bincount(sets, minlength=len(weights)).tolist()
    return sum(int(w) * c + round((w - int(w)) * c) for w, c in zip(weights, counts))
