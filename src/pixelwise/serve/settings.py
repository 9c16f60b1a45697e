"""``pixelwise serve``'s settings: how the model runs, batching, and the limits every request is held to."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from pixelwise.data.imageio import MAX_IMAGE_PIXELS
from pixelwise.errors import PixelwiseError

MIB = 1 << 20


@dataclass(frozen=True)
class ServeSettings:
    """Options of ``pixelwise serve`` (the CLI's defaults)."""

    engine: str = "torch"
    precision: str = "fp32"
    tta: bool = False
    device: str = "auto"
    max_batch: int = 4  # most images per network call; 1 = no batching
    max_wait_ms: float = 5.0  # how long a batch that is not full waits for more images
    max_queue: int = 64  # requests in progress at once (reading, waiting, running); more get 503
    max_body_mb: float = 40.0  # largest request body, MiB (413), counted while it streams in
    max_pixels: int = 40_000_000  # largest width × height (413), read from the image header before decoding
    # decoded pixels held by requests at once (503 beyond): bounds the memory a flood of large images can take
    # (about 4 bytes a pixel while held; format=cutout's pixels count 4×: they hold the probabilities and the alpha)
    max_pixels_in_flight: int = 120_000_000
    timeout: float = 30.0  # seconds from the end of the upload to the result (504)
    workers: int = 0  # threads that decode, resize and encode (0: one per core, at least 2)
    fill_holes: bool = False
    keep_largest: bool = False
    min_area: int = 0
    allowed_hosts: tuple[str, ...] | None = None  # Host header names accepted (None: any)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MIB)

    @property
    def worker_threads(self) -> int:
        return self.workers or max(2, os.cpu_count() or 1)

    def validate(self) -> "ServeSettings":
        """Check every value; returns ``self``.

        Raises:
            PixelwiseError: one line naming the option and the accepted range.
        """
        if self.max_batch < 1:
            raise PixelwiseError(f"--max-batch {self.max_batch}: must be at least 1 (1 turns batching off)")
        if self.max_queue < 1:
            raise PixelwiseError(f"--max-queue {self.max_queue}: must be at least 1")
        if not (math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= 1000):
            raise PixelwiseError(f"--max-wait-ms {self.max_wait_ms}: use 0 to 1000 milliseconds, e.g. 5")
        if not (math.isfinite(self.max_body_mb) and self.max_body_mb > 0):
            raise PixelwiseError(f"--max-body-mb {self.max_body_mb}: must be a positive number of MiB, e.g. 40")
        if not 1 <= self.max_pixels <= MAX_IMAGE_PIXELS:
            raise PixelwiseError(
                f"--max-pixels {self.max_pixels}: use 1 to {MAX_IMAGE_PIXELS:,} (the decompression-bomb limit)"
            )
        if self.max_pixels_in_flight < 1:
            raise PixelwiseError(
                f"--max-pixels-in-flight {self.max_pixels_in_flight}: must be at least 1 "
                f"(one image is always admitted when none is in progress)"
            )
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise PixelwiseError(f"--timeout {self.timeout}: must be a positive number of seconds, e.g. 30")
        if self.workers < 0:
            raise PixelwiseError(f"workers {self.workers}: must be 0 (one per core) or more")
        if self.min_area < 0:
            raise PixelwiseError(f"--min-area {self.min_area}: must be 0 or more")
        return self
