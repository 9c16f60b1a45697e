"""Where and how a network runs: device, threads, precision, autocast, and the one path from uint8 pixels
to the network's input. Training, prediction, evaluation, serving and the bench all use these.

Pixels to input, everywhere: uint8 N×3×H×W (0..255) → :func:`to_unit` (float32 0..1) → :func:`normalize`
with the run's mean/std (``config.json``) → channels_last when the fast path is on. Exported ONNX graphs
take the 0..1 tensor and normalise inside, so both engines are handed the same 0..1 batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from time import monotonic
from typing import Callable

import torch

#: Inference precisions. ``fp32`` gives the same masks as the ONNX engine; ``bf16`` (autocast) is faster on
#: CPUs with native bf16 (AMX / AVX-512 BF16) and on CUDA, and moves a few border pixels (docs/benchmarks.md).
PRECISIONS = ("fp32", "bf16")


def thread_count() -> int:
    """Threads for the math: ``$PIXELWISE_THREADS``, else the cores divided by the processes torchrun started
    on this machine (``LOCAL_WORLD_SIZE``), else every core."""
    value = os.environ.get("PIXELWISE_THREADS", "")
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    try:
        return max(1, int(value)) if value else max(1, (os.cpu_count() or 1) // max(1, processes))
    except ValueError:
        from pixelwise.errors import PixelwiseError

        raise PixelwiseError(
            f"PIXELWISE_THREADS={value!r} is not a number: set it to a thread count such as 2"
        ) from None


def set_threads() -> None:
    """All cores (or ``$PIXELWISE_THREADS``) for torch's intra-op pool; none spinning in a second pool."""
    torch.set_num_threads(thread_count())


def cpu_seconds_of_others() -> tuple[float, float] | None:
    """``(CPU seconds used by every other process, monotonic time)`` so far, from ``/proc/stat`` minus this
    process's own CPU time; None where ``/proc/stat`` cannot be read (not Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = (sum(fields[:3]) + sum(fields[5:7])) / os.sysconf("SC_CLK_TCK")  # user nice system irq softirq
    own = os.times()
    return busy - (own.user + own.system), monotonic()


class ThreadGovernor:
    """Keeps torch's thread count at the cores other programs leave free, while training on the CPU.

    torch's OpenMP threads meet at every parallel region, so one thread sharing its core with another program
    holds all the others up: with one busy competitor on the 2-core development machine, training on 2
    threads ran at 0.24× its speed alone, on 1 thread at 0.53× (``benchmarks/busy.py``). ``OMP_WAIT_POLICY``
    does not cure it (passive: 0.33×, and 0.69× with no competitor at all). So every ``interval`` seconds the
    governor reads how many cores other processes used since its last look and sets the threads to the cores
    they left free, rounded (at least 1, at most :func:`thread_count`).

    Off when ``PIXELWISE_THREADS`` is set (the user chose), under torchrun (the other ranks are not
    competitors), or where ``/proc/stat`` cannot be read.
    """

    def __init__(
        self, interval: float = 10.0, enabled: bool = True, on_change: Callable[[int, float], None] | None = None
    ):
        self.maximum = thread_count()
        self.cores = os.cpu_count() or 1
        self.interval = interval
        self.on_change = on_change
        self.enabled = (
            enabled
            and not os.environ.get("PIXELWISE_THREADS")
            and int(os.environ.get("WORLD_SIZE", "1") or 1) == 1
            and self.maximum > 1
        )
        self._last = cpu_seconds_of_others() if self.enabled else None
        self.enabled = self.enabled and self._last is not None

    def threads_for(self, other_cores: float) -> int:
        """Threads for the cores left free when other processes use ``other_cores`` cores."""
        return max(1, min(self.maximum, int(self.cores - other_cores + 0.5)))

    def check(self) -> int | None:
        """Look again if ``interval`` seconds have passed; returns the new thread count when it changed."""
        # Called after every training step: the clock alone decides whether /proc/stat is read at all.
        if not self.enabled or monotonic() - self._last[1] < self.interval:
            return None
        now = cpu_seconds_of_others()
        if now is None:
            return None
        other_cores = max(0.0, (now[0] - self._last[0]) / (now[1] - self._last[1]))
        self._last = now
        wanted = self.threads_for(other_cores)
        if wanted == torch.get_num_threads():
            return None
        torch.set_num_threads(wanted)
        if self.on_change is not None:
            self.on_change(wanted, other_cores)
        return wanted


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX-512 BF16); elsewhere bf16 autocast is slower."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_fast_mode(requested: bool, device: torch.device) -> bool:
    """bf16 + channels_last only where it pays: CUDA, or a CPU with native bf16."""
    return requested and (device.type == "cuda" or cpu_has_fast_bf16())


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        from pixelwise.errors import PixelwiseError

        raise PixelwiseError(f"unknown precision '{precision}' (--precision): choose one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast when ``enabled``: AMX/AVX-512-BF16 on CPU, tensor cores on CUDA."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W (0..255) → float32 N×3×H×W (0..1)."""
    return images.float().div_(255.0)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """float32 N×3×H×W in 0..1 → ``(x - mean) / std`` per channel."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def network_input(unit: torch.Tensor, mean, std, channels_last: bool) -> torch.Tensor:
    """float32 0..1 N×3×H×W → what the network takes: normalised, channels_last on the fast path."""
    x = normalize(unit, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def model_input(images: torch.Tensor, mean, std, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 N×3×H×W (any device) → the network's float32 input on ``device``."""
    return network_input(to_unit(images.to(device, non_blocking=True)), mean, std, channels_last)


@torch.no_grad()
def batched_probabilities(
    predict_unit: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 16,
) -> torch.Tensor:
    """Run ``predict_unit`` over uint8 images in batches.

    Args:
        predict_unit: float32 0..1 N×3×H×W on ``device`` → probabilities float32 N×K×H×W.
        images: uint8 N×3×H×W, any device.

    Returns:
        float32 N×K×H×W probabilities on the CPU.
    """
    out = [
        predict_unit(to_unit(images[start : start + batch_size].to(device))).float().cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0)
