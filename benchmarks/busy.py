"""Training throughput on a busy machine: does a competing process cost only its share of the cores?

Each condition runs in a fresh process (OpenMP reads its settings at start-up): the default model's training
step (batch 16 at 128², fast mode, no augmentation) is timed for a fixed number of seconds, while 0 or 1
busy-looping competitor processes run. Conditions vary what pixelwise controls: the thread count and
libgomp's wait policy (``OMP_WAIT_POLICY``: ``active`` spins between parallel regions, ``passive`` sleeps).

    .venv/bin/python benchmarks/busy.py            # about 4 minutes; run it on a quiet machine
    .venv/bin/python benchmarks/busy.py --json benchmarks/results/busy.json

The figure that matters: images/s with one competitor ÷ images/s alone. A competitor holding one of two
cores should cost about half (0.5), not 5×.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import os, statistics, sys, time
import torch
from pixelwise.bench import default_recipe, training_setup
from pixelwise.data.augment import build_augment
from pixelwise.runtime import ThreadGovernor, set_threads
from pixelwise.train.loop import train_step
set_threads()
device = torch.device("cpu")
recipe, record = default_recipe(device)
torch.manual_seed(0)
training = training_setup(recipe, device)
model, optimizer, loss_fn = training.model, training.optimizer, training.loss_fn
images = torch.randint(0, 255, (16, 3, 128, 128), dtype=torch.uint8)
masks = (torch.rand(16, 128, 128) > 0.6).to(torch.uint8)
identity = build_augment("none")
governor = ThreadGovernor(interval=3.0, enabled=os.environ.get("BUSY_GOVERNOR") == "1")
for _ in range(3):
    train_step(model, optimizer, loss_fn, identity, images, masks, record, device)
rates, end = [], time.perf_counter() + float(sys.argv[1])
while time.perf_counter() < end:
    governor.check()  # as the training loop calls it after every step
    started = time.perf_counter()
    train_step(model, optimizer, loss_fn, identity, images, masks, record, device)
    rates.append(16 / (time.perf_counter() - started))
print(statistics.median(rates), min(rates), len(rates), torch.get_num_threads())  # threads at the end
"""


def spin(stop_at: float) -> None:
    """A competitor: one busy-looping process (a browser tab, a compile, another user's job)."""
    while time.time() < stop_at:
        pass


def measure(env_changes: dict, competitors: int, seconds: float) -> dict:
    env = {**os.environ, **env_changes}
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
    others = [multiprocessing.Process(target=spin, args=(time.time() + seconds + 30,)) for _ in range(competitors)]
    for process in others:
        process.start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(seconds)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 300,
        ).stdout.split()
    finally:
        for process in others:
            process.terminate()
            process.join()
    median, worst, steps, threads = float(out[0]), float(out[1]), int(out[2]), int(out[3])
    return {
        "images_per_s": round(median, 2),
        "worst_step_images_per_s": round(worst, 2),
        "steps": steps,
        "threads": threads,
    }


CONDITIONS = [
    # name, environment, competitors
    ("alone, libgomp default", {"OMP_WAIT_POLICY": None, "PIXELWISE_THREADS": None}, 0),
    ("alone, OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "PASSIVE", "PIXELWISE_THREADS": None}, 0),
    ("1 competitor, libgomp default", {"OMP_WAIT_POLICY": None, "PIXELWISE_THREADS": None}, 1),
    ("1 competitor, OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "PASSIVE", "PIXELWISE_THREADS": None}, 1),
    ("1 competitor, OMP_WAIT_POLICY=active", {"OMP_WAIT_POLICY": "ACTIVE", "PIXELWISE_THREADS": None}, 1),
    ("1 competitor, 1 thread", {"OMP_WAIT_POLICY": None, "PIXELWISE_THREADS": "1"}, 1),
    # pixelwise's ThreadGovernor (what `pixelwise train` does; it looks every 3 s here, 10 s in training)
    ("alone, thread governor", {"OMP_WAIT_POLICY": None, "PIXELWISE_THREADS": None, "BUSY_GOVERNOR": "1"}, 0),
    ("1 competitor, thread governor", {"OMP_WAIT_POLICY": None, "PIXELWISE_THREADS": None, "BUSY_GOVERNOR": "1"}, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=25.0, help="timed seconds per condition")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--only", nargs="*", help="conditions whose name contains one of these words")
    args = parser.parse_args()
    results = {}
    previous = json.loads(args.json.read_text())["results"] if args.json and args.json.exists() else {}
    for name, env, competitors in CONDITIONS:
        if args.only and not any(word in name for word in args.only):
            if name in previous:
                results[name] = previous[name]
            continue
        results[name] = measure(env, competitors, args.seconds)
        print(
            f"{name:45s} {results[name]['images_per_s']:7.2f} images/s (worst step "
            f"{results[name]['worst_step_images_per_s']:.2f}, {results[name]['threads']} threads)",
            flush=True,
        )
    base = results["alone, libgomp default"]["images_per_s"]
    for name, row in results.items():
        row["share_of_alone"] = round(row["images_per_s"] / base, 3)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"cores": os.cpu_count(), "seconds": args.seconds, "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
