"""Dynamic batching on one inference thread, fed from the server's event loop.

The event loop hands each prepared image (``uint8`` 3×S×S at the run's size, plus its original H×W) to
:meth:`Batcher.submit` and awaits the returned asyncio future; it never runs the network itself. The
inference thread takes the first waiting image, then whatever else is already queued, then waits up to
``max_wait`` for more, until it has ``max_batch`` images; it runs them as one batch
(:meth:`pixelwise.api.Segmenter.labels`: the network, then each image's labels at its own size) and
resolves each future on its loop. Images of different sizes batch together: they were all resized to the
run's size first (tiled runs: each image is cut into the run's tiles in turn). A request that timed out (its
future cancelled) before its turn is skipped. Images whose answer needs the probabilities (cutouts) are
batched apart from the others, so only they pay for keeping them.

Each job carries the :class:`~pixelwise.api.Segmenter` it was prepared for, so a reload that swaps the
model never mixes two runs in one request: jobs of different runs are batched separately.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("pixelwise.serve")


@dataclass
class _Job:
    segmenter: object  # pixelwise.api.Segmenter
    x: np.ndarray  # uint8 3×S×S, or the H×W×3 image of a tiled run (Segmenter.network_inputs)
    size: tuple[int, int]  # the original (H, W)
    keep_probabilities: bool  # the answer needs the probabilities at the image's size (cutouts)
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Batcher:
    """One thread that runs the network on batches of up to ``max_batch`` queued images.

    Args:
        max_batch: most images per network call (1: no batching).
        max_wait: seconds a batch that is not full may wait for more images after the queue ran empty.
        more_coming: called on the inference thread: True while images are on their way to the queue
            (default: always, so a batch that is not full always waits ``max_wait``).
    """

    def __init__(self, max_batch: int = 4, max_wait: float = 0.005, more_coming=None):
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait))
        self.more_coming = more_coming or (lambda: True)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.batch_sizes: Counter = Counter()  # batch size -> how many batches ran with it

    @property
    def depth(self) -> int:
        """Images waiting for the network (approximate)."""
        return self._queue.qsize()

    def submit(
        self, segmenter, x: np.ndarray, size: tuple[int, int], keep_probabilities: bool = False
    ) -> asyncio.Future:
        """Queue one image; call from the event loop. The future's result is ``(labels, probabilities)``: the
        ``uint8`` H×W labels (before post-processing) and, with ``keep_probabilities``, the ``float32`` K×H×W
        probabilities at the image's size (else None); or the exception the network step raised."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_thread()
        self._queue.put(_Job(segmenter, x, (int(size[0]), int(size[1])), bool(keep_probabilities), future, loop))
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread after the batch in progress; images still queued get a ``RuntimeError``."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._resolve(job, error=RuntimeError("the server is shutting down"))

    # -- the inference thread ------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pixelwise-inference", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch, stop = [job], False
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    if remaining > 0 and self.more_coming():
                        job = self._queue.get(timeout=remaining)
                    else:
                        job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._process(batch)
            if stop:
                return

    def _process(self, batch: list[_Job]) -> None:
        live = [job for job in batch if not job.future.done()]  # cancelled: its request timed out
        groups: dict[tuple[int, bool], list[_Job]] = {}
        for job in live:
            groups.setdefault((id(job.segmenter), job.keep_probabilities), []).append(job)
        for (_, keep), jobs in groups.items():
            try:
                # Squashed runs' inputs stack into one batch; tiled runs' images are tiled one by one.
                results = jobs[0].segmenter.labels([job.x for job in jobs], [job.size for job in jobs], keep)
            except BaseException as error:  # handed to the requests: the thread must survive
                log.exception("inference failed on a batch of %d", len(jobs))
                for job in jobs:
                    self._resolve(job, error=error)
                continue
            self.batch_sizes[len(jobs)] += 1
            for job, labels_and_probabilities in zip(jobs, results):
                self._resolve(job, result=labels_and_probabilities)

    @staticmethod
    def _resolve(job: _Job, result=None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody waits for this result any more
            pass
