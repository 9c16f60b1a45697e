"""Training configuration: every choice of a run, saved as ``config.json`` and reused by ``--resume``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from pixelwise.data import MEAN, STD
from pixelwise.errors import PixelwiseError


@dataclass
class TrainConfig:
    """Defaults are the best recipe measured so far (docs/experiments.md)."""

    data: str | None = None          # None: the embedded synthetic set
    layout: str | None = None        # force a dataset layout (else detected)
    model: str = "res_unet"
    loss: str = "bce+dice"
    augment: str = "light"
    epochs: int = 40
    budget_seconds: float | None = None  # fit epochs + cosine decay to this much training time
    size: int = 128                  # square network input, pixels
    batch_size: int = 16
    optimizer: str = "adamw"         # adamw, or adam (the lesson's)
    schedule: str = "cosine"         # warm-up + cosine decay, or constant (the lesson's)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    patience: int = 8                # epochs without a better validation Dice before stopping
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    folds: int | None = None         # K-fold cross-validation: one model per fold (an ensemble)...
    fold: int | None = None          # ...or only fold i of the K folds, as a single model
    fast: bool = True                # CPU: bf16 autocast + channels_last; CUDA: bf16 autocast
    skip_bad: bool = False
    cache_dir: str | None = None
    synth_n: int = 400               # size of the embedded synthetic set
    # Learned from the data and the validation split, written back after training:
    num_classes: int | None = None
    threshold: float = 0.5
    mean: tuple = MEAN
    std: tuple = STD
    extra: dict = field(default_factory=dict)

    @property
    def is_ensemble(self) -> bool:
        """True for a run holding one model per fold (``fold_<i>/`` sub-folders)."""
        return bool(self.folds) and self.fold is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def parse_duration(text: str) -> float:
    """'15m', '90s', '1h', '1h30m' or plain seconds → seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise PixelwiseError(f"cannot read duration '{text}': write it like 15m, 90s or 1h30m")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * scale[u] for n, u in parts)
