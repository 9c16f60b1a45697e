"""Benchmark ``pixelwise serve`` on loopback against the model alone and ``pixelwise predict`` offline.

Measures, for a fresh untrained default-model run (``pixelwise.bench.make_bench_run``) at ``--size``:

- the bare model call: ms per image of the network alone at batch 1 (``RunPredictor.predict_unit`` on a
  ready 0..1 tensor), the floor of any request's latency; taken at the start and again right before each
  server's 1-client cell;
- predict offline: images/s of ``predict_files`` (read, resize, network in batches of 8, mask + overlay
  PNGs written) on a folder of the same images, and of the same per-image path without the overlay
  (read → ``segment_images`` → ``png_bytes``: what a ``format=png`` request computes);
- the server: requests/s and p50/p95 latency with 1, 4 and 16 concurrent keep-alive clients posting the
  image's bytes to ``/v1/segment?format=png``, for each image size, with batching on (``--max-batch 4``, the default)
  and off (``--max-batch 1``); each server is a fresh ``pixelwise serve`` process;
- peak resident memory (``VmHWM``) of a server flooded for ``--flood-seconds`` by 16 clients uploading
  images at the server's ``--max-pixels`` limit.

Targets checked: requests/s at 16 clients ≥ 70 % of predict's offline images/s; p95 at 1 client ≤ 2×
the bare model call. Run it on a quiet machine (it warns when other processes use the CPU):

    .venv/bin/python benchmarks/serve.py --json benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A dermoscopy-like RGB image at size×size (made at ≤ 512 px, upscaled: the generator is slow above)."""
    from pixelwise.data.synth import sample_rng, synth_sample

    base = synth_sample(sample_rng(3, seed), min(size, 512))[0]
    if base.shape[0] != size:
        base = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC))
    return base


def jpeg_bytes(image: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def cpu_busy_seconds() -> float:
    """CPU seconds used by all processes so far (user + nice + system), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / ticks


def proc_status(pid: int, key: str) -> float:
    """A ``/proc/PID/status`` memory field (VmHWM, VmRSS) in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ---------------------------------------------------------------------------------------------------------
# Offline figures


class BareModel:
    """The network alone: median ms of one batch-1 call on a ready 0..1 tensor at the run's size.

    Measured again right before each server's 1-client cell (the server idle): this VM's speed drifts by
    ±30 % over minutes, so the latency target compares figures taken together.
    """

    def __init__(self, run: Path, precision: str):
        import torch

        from pixelwise.predict.torch_engine import torch_predictor

        self.predictor = torch_predictor(run, precision=precision)
        size = self.predictor.config.record.size
        self.x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))

    def ms(self, reps: int = 20) -> float:
        import torch

        times = []
        with torch.inference_mode():
            for i in range(reps + 3):
                start = time.perf_counter()
                self.predictor.predict_unit(self.x)
                if i >= 3:
                    times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000.0


def offline_rates(run: Path, precision: str, folder: Path, scratch: Path) -> dict:
    """images/s of predict_files on ``folder`` (best of 2), and of the same path without the overlay."""
    from pixelwise.data.imageio import read_image
    from pixelwise.predict.predict import collect_inputs, predict_files
    from pixelwise.predict.segment import segment_images
    from pixelwise.predict.torch_engine import torch_predictor

    predictor = torch_predictor(run, precision=precision)
    files = collect_inputs([folder])
    predict_files(predictor, files[:8], scratch / "warm")  # the library is quiet unless logging is set up
    rates = []
    for rep in range(2):
        start = time.perf_counter()
        predict_files(predictor, [folder], scratch / f"out{rep}")
        rates.append(len(files) / (time.perf_counter() - start))
    start = time.perf_counter()
    for i in range(0, len(files), 8):
        for result in segment_images(predictor, [read_image(f) for f in files[i : i + 8]]):
            result.png_bytes()
    masks_only = len(files) / (time.perf_counter() - start)
    return {"predict_images_per_s": max(rates), "masks_only_images_per_s": masks_only, "images": len(files)}


# ---------------------------------------------------------------------------------------------------------
# The server


class Server:
    """``pixelwise serve RUN --port 0 ...`` in a subprocess; the address is read from its first line."""

    def __init__(self, run: Path, log_path: Path, *options: str):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        command = [
            sys.executable,
            "-c",
            "from pixelwise.cli import main; main()",
            "serve",
            str(run),
            "--port",
            "0",
            *options,
        ]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while True:
            text = log_path.read_text(errors="replace")
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/", text)
            if found and self._healthy(int(found.group(1))):
                self.port = int(found.group(1))
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pixelwise serve did not start: {text}")
            time.sleep(0.1)

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def load(port: int, body: bytes, clients: int, seconds: float, fmt: str = "png", sample_pid: int | None = None) -> dict:
    """``clients`` threads post ``body`` in a loop over keep-alive connections for ``seconds``."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    rss_peak = [0.0]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            try:
                connection.request(
                    "POST", f"/v1/segment?format={fmt}", body=body, headers={"Content-Type": "image/jpeg"}
                )
                answer = connection.getresponse()
                answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException):
                status = -1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            elapsed = time.perf_counter() - start
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(elapsed)
        connection.close()

    def sampler() -> None:
        while time.monotonic() < stop_at:
            rss_peak[0] = max(rss_peak[0], proc_status(sample_pid, "VmRSS"))
            time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    if sample_pid:
        threads.append(threading.Thread(target=sampler))
    busy0, start = cpu_busy_seconds(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    busy = cpu_busy_seconds() - busy0
    ok = len(latencies)
    ms = sorted(1000.0 * t for t in latencies)
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "ok": ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "requests_per_s": ok / wall,
        "p50_ms": ms[len(ms) // 2] if ms else None,
        "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else None,
        "cpu_cores_used": busy / wall,
        "rss_peak_sampled_mib": rss_peak[0] or None,
    }


def other_load() -> float:
    """Cores busy over one second before starting (other processes: nothing of ours runs yet)."""
    busy0 = cpu_busy_seconds()
    time.sleep(1.0)
    return cpu_busy_seconds() - busy0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="the run's network input side (default 256)")
    parser.add_argument("--image-sizes", default="256,1024", help="uploaded image sides, comma-separated")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=12.0, help="measuring time per cell")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed load before each server's cells")
    parser.add_argument("--precision", default="fp32", help="the server's and predict's --precision")
    parser.add_argument("--offline-images", type=int, default=48, help="images in predict's offline folder")
    parser.add_argument("--batches", default="4,1", help="the servers' --max-batch values, comma-separated")
    parser.add_argument("--flood-seconds", type=float, default=30.0, help="length of the memory flood (0: none)")
    parser.add_argument("--flood-clients", type=int, default=16)
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="the flooded server's --max-pixels")
    parser.add_argument("--flood-only", action="store_true", help="measure only the memory flood")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out (finally)

    from pixelwise.bench import make_bench_run
    from pixelwise.runtime import set_threads

    set_threads()  # as the CLI commands do: PIXELWISE_THREADS, else every core

    sizes = [] if args.flood_only else [int(s) for s in args.image_sizes.split(",")]
    client_counts = [int(c) for c in args.clients.split(",")]
    batch_values = [int(b) for b in args.batches.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="pixelwise-serve-bench-"))
    run = make_bench_run(scratch / "run", args.size)
    other = other_load()
    print(
        f"run: {run} (default model, untrained, {args.size}×{args.size}); other processes used {other:.2f} cores "
        f"in the second before",
        flush=True,
    )
    if other > 0.2:
        print("warning: the machine is not quiet; figures will be low and noisy", flush=True)
    results: dict = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "other_processes_cores_before": round(other, 3),
        },
        "run_size": args.size,
        "precision": args.precision,
        "bare_model_ms": None,
        "offline": {},
        "serve": {},
        "flood": None,
        "targets": {},
    }
    import torch

    results["machine"]["torch"] = torch.__version__
    bare = BareModel(run, args.precision)
    results["bare_model_ms"] = {"start": bare.ms(30)}
    print(f"bare model call (batch 1, {args.size}²): {results['bare_model_ms']['start']:.1f} ms", flush=True)

    bodies = {}
    for side in sizes:
        folder = scratch / f"images{side}"
        folder.mkdir()
        for i in range(args.offline_images):
            (folder / f"img{i:03d}.jpg").write_bytes(jpeg_bytes(synthetic_image(side, i % 8)))
        bodies[side] = (folder / "img000.jpg").read_bytes()
        offline = offline_rates(run, args.precision, folder, scratch / f"predict{side}")
        results["offline"][str(side)] = offline
        print(
            f"predict offline, {side}² JPEG: {offline['predict_images_per_s']:.1f} images/s (mask + overlay files), "
            f"{offline['masks_only_images_per_s']:.1f} images/s (mask bytes only)",
            flush=True,
        )

    for side in sizes:
        for batch in batch_values:
            label = f"{side}px_batch{batch}"
            server = Server(run, scratch / f"{label}.log", "--max-batch", str(batch), "--precision", args.precision)
            try:
                load(server.port, bodies[side], max(client_counts), args.warmup)
                cells = []
                for clients in client_counts:
                    if clients == 1:
                        time.sleep(1.0)  # the server's threads idle again
                        bare_ms = bare.ms()
                        results["bare_model_ms"][label] = bare_ms
                    cell = load(server.port, bodies[side], clients, args.seconds)
                    if clients == 1:
                        cell["bare_model_ms_just_before"] = bare_ms
                    cells.append(cell)
                    before = f" (bare model call just before: {bare_ms:.1f} ms)" if clients == 1 else ""
                    print(
                        f"serve {side}² max-batch {batch}: {clients:>2} clients {cell['requests_per_s']:6.1f} req/s, "
                        f"p50 {cell['p50_ms']:.1f} ms, p95 {cell['p95_ms']:.1f} ms, statuses "
                        f"{cell['statuses']}{before}",
                        flush=True,
                    )
                results["serve"][label] = cells
            finally:
                server.stop()

    # Memory under a flood of the largest accepted images.
    if args.flood_seconds > 0:
        side_w = int(np.sqrt(args.max_pixels))
        side_h = args.max_pixels // side_w
        big = np.asarray(Image.fromarray(synthetic_image(512, 1)).resize((side_w, side_h), Image.BICUBIC))
        body = jpeg_bytes(big)
        server = Server(run, scratch / "flood.log", "--max-pixels", str(args.max_pixels), "--precision", args.precision)
        try:
            after_start = proc_status(server.process.pid, "VmHWM")
            flood = load(server.port, body, args.flood_clients, args.flood_seconds, sample_pid=server.process.pid)
            flood.update(
                image=f"{side_w}×{side_h} JPEG, {len(body) / 2**20:.1f} MiB",
                vmhwm_after_start_mib=after_start,
                vmhwm_mib=proc_status(server.process.pid, "VmHWM"),
            )
        finally:
            server.stop()
        results["flood"] = flood
        print(
            f"flood: {args.flood_clients} clients × {args.flood_seconds:g} s of {flood['image']}: {flood['ok']} "
            f"answered, "
            f"statuses {flood['statuses']}, peak RSS (VmHWM) {flood['vmhwm_mib']:.0f} MiB "
            f"(after start-up {after_start:.0f} MiB)",
            flush=True,
        )

    # Targets: the batching server (the first --batches value) against predict offline and the bare model.
    for side in sizes:
        offline = results["offline"][str(side)]
        batched = {c["clients"]: c for c in results["serve"][f"{side}px_batch{batch_values[0]}"]}
        top, single = batched[max(client_counts)], batched[min(client_counts)]
        bare_ms = single.get("bare_model_ms_just_before") or results["bare_model_ms"]["start"]
        results["targets"][str(side)] = t = {
            "throughput_ratio": top["requests_per_s"] / offline["predict_images_per_s"],
            "throughput_ratio_masks_only": top["requests_per_s"] / offline["masks_only_images_per_s"],
            "throughput_ok": top["requests_per_s"] >= 0.7 * offline["predict_images_per_s"],
            "p95_over_bare": single["p95_ms"] / bare_ms,
            "p95_ok": single["p95_ms"] <= 2 * bare_ms,
        }
        print(
            f"targets {side}²: {max(client_counts)} clients {top['requests_per_s']:.1f} req/s = "
            f"{100 * t['throughput_ratio']:.0f} % of predict offline ({'met' if t['throughput_ok'] else 'MISSED'}; "
            f"{100 * t['throughput_ratio_masks_only']:.0f} % of the masks-only pipeline); "
            f"p95 at 1 client {single['p95_ms']:.1f} ms = {t['p95_over_bare']:.2f}× the bare call ({bare_ms:.1f} ms) "
            f"({'met' if t['p95_ok'] else 'MISSED'})",
            flush=True,
        )
    results["other_processes_cores_after"] = round(other_load(), 3)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
