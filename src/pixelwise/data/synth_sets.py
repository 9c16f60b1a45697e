"""The embedded synthetic data sets ``pixelwise data synth --task`` writes: one row each, the generator named by
its module so the CLI lists them without importing it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from pixelwise.choices import Choice, choose, table


@dataclass(frozen=True)
class SynthSpec(Choice):
    """A ``data synth --task``: the module and function that write the set."""

    module: str = ""
    function: str = ""


#: ``data synth --task``: one row per embedded set.
SYNTH_SETS = table(
    SynthSpec(
        "semantic",
        "dermoscopy-like lesions in images/ + masks/ (0/255), the demo's set",
        "pixelwise.data.synth",
        "make_synth_dataset",
    ),
    SynthSpec(
        "instances",
        "fluorescence-like nuclei, many touching, in the DSB 2018 layout (ID/images/ID.png, one PNG per nucleus "
        "in ID/masks/)",
        "pixelwise.data.synth_nuclei",
        "make_synth_nuclei",
    ),
)


def make_synth(task: str, out: Path, n: int, size: int, seed: int, progress: bool = True) -> Path:
    """Write the embedded set ``task`` (a row of :data:`SYNTH_SETS`) to ``out``; returns ``out``.

    Raises:
        PixelwiseError: an unknown ``task``, bad ``n``/``size``/``seed``, or ``out`` holding something else.
    """
    spec = choose("--task", task, SYNTH_SETS)
    write = getattr(importlib.import_module(spec.module), spec.function)
    return write(out, n=n, size=size, seed=seed, progress=progress)
