"""Test-wide settings.

pytest runs with two workers on two cores (``make test``): one torch thread per worker (and per
subprocess, through PIXELWISE_THREADS) avoids oversubscription, which made MONAI networks ~50x slower.
Caches go to a temporary folder so tests never write to the user's ~/.cache.
"""

import os
import tempfile

import torch

os.environ.setdefault("PIXELWISE_THREADS", "1")
os.environ.setdefault("PIXELWISE_CACHE", tempfile.mkdtemp(prefix="pixelwise-test-cache-"))
torch.set_num_threads(1)
