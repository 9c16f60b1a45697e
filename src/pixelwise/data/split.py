"""Seeded, stratified train/val/test splits and k-fold splits, saved as ``split.json`` in a run.

The split depends only on the pair ids, their labels, the seed and the ratios/folds, never on the order the
pairs were listed in, so the same dataset and seed always give the same split on any machine.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from pixelwise.data.layouts import Pair
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_json

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FORMAT_VERSION = 1


def make_split(
    pairs: Iterable[Pair],
    seed: int,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    folds: int | None = None,
    fold: int | None = None,
) -> dict[str, list[str]]:
    """Split pairs into train/val/test, stratified by ``Pair.label`` when labels are known.

    Args:
        pairs: the dataset's pairs (ids must be unique).
        seed: random seed; same pairs + seed → same split.
        ratios: fractions (train, val, test), summing to 1. With ``folds``, only train:val matters (the share of
            the non-test pairs that goes to validation is ``val / (train + val)``).
        folds: number of folds K for k-fold cross-validation, or None.
        fold: which fold (0..K-1) is the test set; required with ``folds``.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: sorted pair ids, disjoint, covering all pairs.

    Raises:
        PixelwiseError: bad ratios, fold options, duplicate ids, or too few pairs.
    """
    pairs = sorted(pairs, key=lambda p: p.id)
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise PixelwiseError(f"pair id {duplicate!r} appears twice; pair ids must be unique to split a dataset")
    ratios = _check_ratios(ratios)
    strata = _strata(pairs)
    rng = np.random.default_rng(seed)
    shuffled = {label: [members[i] for i in rng.permutation(len(members))] for label, members in strata.items()}
    if folds is None:
        if fold is not None:
            raise PixelwiseError("--fold needs --folds K (the number of folds)")
        if len(pairs) < sum(1 for r in ratios if r > 0):
            raise PixelwiseError(f"only {len(pairs)} pairs: too few to split into {ratios}; add data or change ratios")
        parts = _allocate(shuffled, ratios)
    else:
        if folds < 2:
            raise PixelwiseError(f"--folds {folds}: need at least 2 folds")
        if fold is None or not 0 <= fold < folds:
            raise PixelwiseError(f"--fold {fold}: choose a fold between 0 and {folds - 1}")
        if len(pairs) < folds:
            raise PixelwiseError(f"only {len(pairs)} pairs: too few for {folds} folds; use fewer folds")
        fold_of = _assign_folds(shuffled, folds)
        test = [i for i in ids if fold_of[i] == fold]
        rest = {label: [i for i in members if fold_of[i] != fold] for label, members in shuffled.items()}
        share = ratios[1] / (ratios[0] + ratios[1]) if ratios[0] + ratios[1] > 0 else 0.0
        train_val = _allocate(rest, (1.0 - share, share, 0.0))
        parts = {"train": train_val["train"], "val": train_val["val"], "test": test}
    return {name: sorted(parts[name]) for name in SPLIT_NAMES}


def _check_ratios(ratios) -> tuple[float, float, float]:
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise PixelwiseError(f"split ratios {ratios!r}: give three numbers train,val,test") from None
    if len(values) != 3 or any(r < 0 for r in values) or abs(sum(values) - 1.0) > 1e-6 or values[0] <= 0:
        raise PixelwiseError(f"split ratios {ratios!r}: need three non-negative numbers summing to 1, train > 0")
    return values  # type: ignore[return-value]


def _strata(pairs: list[Pair]) -> dict[str, list[str]]:
    """Pair ids grouped by label ("" for unlabelled); one group when no pair has a label."""
    groups: dict[str, list[str]] = defaultdict(list)
    for pair in pairs:
        groups[pair.label or ""].append(pair.id)
    return dict(sorted(groups.items()))


def _allocate(strata: dict[str, list[str]], ratios: tuple[float, float, float]) -> dict[str, list[str]]:
    """Cut each (shuffled) stratum by ``ratios`` so that both the totals and every stratum follow the ratios.

    Totals per split are fixed first (largest remainder); each stratum then gets its floor share, and the
    leftover items go, largest fractional remainder first, to the splits still short of their totals.
    """
    total = sum(len(m) for m in strata.values())
    targets = _largest_remainder(total, ratios)
    # Keep val/test non-empty when asked for and possible: a split with ratio > 0 must not vanish by rounding.
    for index in (1, 2):
        if ratios[index] > 0 and targets[index] == 0 and targets[0] > 1:
            targets[index], targets[0] = 1, targets[0] - 1
    counts = {label: [int(len(m) * r) for r in ratios] for label, m in strata.items()}
    remaining = [t - sum(c[k] for c in counts.values()) for k, t in enumerate(targets)]
    for k in range(3):  # a split over its total (after the non-empty fix) gives items back from big strata
        while remaining[k] < 0:
            label = max((lbl for lbl in counts if counts[lbl][k] > 0), key=lambda lbl: counts[lbl][k])
            counts[label][k] -= 1
            remaining[k] += 1
    leftovers = []
    for label, members in strata.items():
        for k in range(3):
            leftovers.append((-(len(members) * ratios[k] - counts[label][k]), label, k))
    for _, label, k in sorted(leftovers):
        if remaining[k] > 0 and sum(counts[label]) < len(strata[label]):
            counts[label][k] += 1
            remaining[k] -= 1
    for label, members in strata.items():  # anything still unplaced (rounding ties) goes where room is left
        while sum(counts[label]) < len(members):
            k = int(np.argmax(remaining)) if max(remaining) > 0 else 0
            counts[label][k] += 1
            remaining[k] -= 1
    parts: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for label, members in strata.items():
        n_train, n_val, _ = counts[label]
        parts["train"] += members[:n_train]
        parts["val"] += members[n_train : n_train + n_val]
        parts["test"] += members[n_train + n_val :]
    return parts


def _largest_remainder(total: int, ratios: tuple[float, ...]) -> list[int]:
    exact = [total * r for r in ratios]
    counts = [int(e) for e in exact]
    order = sorted(range(len(ratios)), key=lambda k: -(exact[k] - counts[k]))
    for k in order[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _assign_folds(strata: dict[str, list[str]], folds: int) -> dict[str, int]:
    """Deal each shuffled stratum round-robin into folds, continuing the count across strata so folds stay
    balanced in size as well as in labels."""
    fold_of: dict[str, int] = {}
    position = 0
    for members in strata.values():
        for pair_id in members:
            fold_of[pair_id] = position % folds
            position += 1
    return fold_of


def save_split(path: str | Path, split: dict, **meta) -> Path:
    """Write a split as JSON (atomically): ``{"version", **meta, "counts", "train", "val", "test"}``.

    ``meta`` records how the split was made (seed, ratios, folds, fold, dataset root, layout).
    """
    _check_disjoint(split, Path(path))
    record = {"version": SPLIT_FORMAT_VERSION, **meta}
    record["counts"] = {name: len(split.get(name, [])) for name in SPLIT_NAMES}
    for name in SPLIT_NAMES:
        record[name] = list(split.get(name, []))
    return atomic_write_json(path, record)


def load_split(path: str | Path) -> dict:
    """Read a ``split.json``: the dict written by :func:`save_split` (``train``/``val``/``test`` lists + meta).

    Raises:
        PixelwiseError: missing or malformed file, or an id in two parts (which would leak test data).
    """
    path = Path(path)
    if not path.is_file():
        raise PixelwiseError(f"{path}: split file not found; train a run first or pass the run folder")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PixelwiseError(f"{path}: split file is not valid JSON ({err}); re-create it") from None
    if not isinstance(record, dict) or not all(isinstance(record.get(n), list) for n in SPLIT_NAMES):
        raise PixelwiseError(f"{path}: split file needs lists 'train', 'val' and 'test'; re-create it")
    _check_disjoint(record, path)
    return record


def _check_disjoint(split: dict, path: Path) -> None:
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for pair_id in split.get(name, []):
            if pair_id in seen:
                raise PixelwiseError(
                    f"{path}: pair {pair_id!r} is in both {seen[pair_id]!r} and {name!r}; "
                    "a split must not leak images between parts"
                )
            seen[pair_id] = name


def select(pairs: Iterable[Pair], ids: Iterable[str], what: str = "split") -> list[Pair]:
    """The pairs whose ids are in ``ids``, in the order of ``ids``.

    Raises:
        PixelwiseError: an id of the split is not in the dataset (dataset changed since the split was made).
    """
    by_id = {p.id: p for p in pairs}
    wanted = list(ids)
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise PixelwiseError(
            f"{len(missing)} pair(s) of the {what} are not in the dataset (first: {missing[0]!r}); "
            "use the dataset the run was trained on"
        )
    return [by_id[i] for i in wanted]
