"""Benchmark the served page's camera mode: round-trip latency and sustained frames/s through a real browser.

For each run (a tiny one from ``tests/tiny_run.py``, 64×64 input; and a fresh untrained default-model run,
``pixelwise.bench.make_bench_run``, at ``--size``), a new ``pixelwise serve`` process on loopback and Debian's
headless Chromium whose fake camera plays a synthetic ``--width``×``--height`` y4m clip at 30 frames/s. The
page's camera mode runs as a person would use it (one frame in flight, JPEG out over ``/v1/stream``, the mask
PNG back and drawn over the frame); after ``--warmup`` seconds the page's own timings are read for
``--seconds``:

- round trip: from the frame's JPEG sent to its answer received (the page's ``performance.now()``);
- capture → drawn: from the video frame captured (before JPEG encoding) to its mask drawn;
- server: the ``server_ms`` each answer carries (decode, resize, network, mask PNG);
- frames/s: masks drawn per second over the window (bounded by the camera's 30 frames/s).

The browser runs on the same cores as the server (its JPEG encoding, the mask's decoding and compositing):
the figures are those of a person running both on one machine. Command:

    .venv/bin/python benchmarks/camera.py --json benchmarks/results/camera.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from serve import Server, cpu_busy_seconds, other_load  # noqa: E402  (benchmarks/serve.py)

from tiny_run import camera_frames, make_tiny_run, write_y4m  # noqa: E402  (tests/tiny_run.py)

CHROMIUM = os.environ.get("PIXELWISE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "mean": statistics.fmean(values)}


def measure(playwright, clip: Path, url: str, warmup: float, seconds: float) -> dict:
    """The page's camera mode against ``url`` for ``warmup`` + ``seconds``; its timings over the last part."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={clip}"], headless=True
    )
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        page.click("#camera-toggle")
        page.wait_for_function(
            "() => Number(document.getElementById('camera-canvas').dataset.drawn || 0) >= 3", timeout=120_000
        )
        time.sleep(warmup)
        page.evaluate(
            "() => { const s = window.pixelwiseCamera; s.rtt.length = s.server.length = s.latency.length = 0;"
            " s.drawnAtStart = s.drawn; s.errorsAtStart = s.errors; }"
        )
        busy0, start = cpu_busy_seconds(), time.perf_counter()
        time.sleep(seconds)
        stats = page.evaluate("() => window.pixelwiseCamera")
        wall = time.perf_counter() - start
        busy = cpu_busy_seconds() - busy0
        size = page.evaluate(
            "() => [document.getElementById('camera-canvas').width, document.getElementById('camera-canvas').height]"
        )
        page.click("#camera-toggle")
    finally:
        browser.close()
    drawn = stats["drawn"] - stats["drawnAtStart"]
    return {
        "frame_size": size,
        "frames_drawn": drawn,
        "frames_per_s": drawn / wall,
        "errors": stats["errors"] - stats["errorsAtStart"],
        "round_trip_ms": summary(stats["rtt"]),
        "capture_to_drawn_ms": summary(stats["latency"]),
        "server_ms": summary(stats["server"]),
        "cores_busy": busy / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="tiny,default", help="which runs: tiny, default (comma-separated)")
    parser.add_argument("--size", type=int, default=256, help="the default-model run's input side")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="untimed camera time before measuring")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    from pixelwise.bench import make_bench_run

    scratch = Path(tempfile.mkdtemp(prefix="pixelwise-camera-bench-"))
    clip = write_y4m(scratch / "clip.y4m", camera_frames(30, args.width, args.height))
    other = other_load()
    print(f"other processes used {other:.2f} cores in the second before", flush=True)
    results: dict = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "other_processes_cores_before": round(other, 3),
        },
        "camera": {"width": args.width, "height": args.height, "fps": 30},
        "runs": {},
    }
    makers = {
        "tiny": lambda: make_tiny_run(scratch / "tiny"),
        "default": lambda: make_bench_run(scratch / "default", args.size),
    }
    with sync_playwright() as playwright:
        for name in args.runs.split(","):
            run = makers[name]()
            server = Server(run, scratch / f"{name}.log")
            try:
                figures = measure(playwright, clip, f"http://127.0.0.1:{server.port}/", args.warmup, args.seconds)
            finally:
                server.stop()
            log = [json.loads(line) for line in (scratch / f"{name}.log").read_text().splitlines() if line[:1] == "{"]
            figures["server_stream_log"] = [line for line in log if line.get("path") == "/v1/stream"]
            results["runs"][name] = figures
            rt, cd, sv = figures["round_trip_ms"], figures["capture_to_drawn_ms"], figures["server_ms"]
            print(
                f"{name}: {figures['frame_size'][0]}×{figures['frame_size'][1]} frames, "
                f"{figures['frames_per_s']:.1f} frames/s ({figures['frames_drawn']} drawn, "
                f"{figures['errors']} errors); "
                f"round trip p50 {rt['p50']:.1f} / p95 {rt['p95']:.1f} ms; capture→drawn p50 {cd['p50']:.1f} / "
                f"p95 {cd['p95']:.1f} ms; server p50 {sv['p50']:.1f} / p95 {sv['p95']:.1f} ms; "
                f"{figures['cores_busy']:.2f} cores busy",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
