"""Does ``torch.compile`` (inductor) make pixelwise's training step faster on this CPU?

For each network: the training loop's own ``train_step`` (bf16 autocast + channels_last, AdamW, the default
loss, no augmentation) on one in-memory batch, eager against ``torch.compile(model)``, timed in turns
(median of ``--reps`` rounds after warm-up). The first compiled steps pay the compilation; it is reported
apart, since a short run pays it once.

    .venv/bin/python benchmarks/compile_cpu.py --json benchmarks/results/compile_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from pixelwise.bench import default_recipe, interleaved_rates, machine_info, training_setup
from pixelwise.data.augment import build_augment
from pixelwise.data.synth import sample_rng, synth_sample
from pixelwise.train.loop import train_step


def batch(size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [synth_sample(sample_rng(3, i), size) for i in range(n)]
    images = torch.stack([torch.from_numpy(image.transpose(2, 0, 1).copy()) for image, _ in samples])
    masks = torch.stack([torch.from_numpy(mask) for _, mask in samples])
    return images, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["unet", "effnet_lite0_unet"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device("cpu")
    images, masks = batch(args.size, args.batch)
    identity = build_augment("none")
    results = {
        "machine": machine_info(device),
        "size": args.size,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "models": {},
    }
    for name in args.models:
        works, compile_seconds = {}, None
        for mode in ("eager", "compiled"):
            torch.manual_seed(0)
            recipe, record = default_recipe(device, model=name)
            training = training_setup(recipe, device)
            model, optimizer, loss_fn = training.model, training.optimizer, training.loss_fn
            if mode == "compiled":
                model = torch.compile(model)
                started = time.perf_counter()
                for _ in range(2):  # compiles forward and backward (and recompiles once for the next shapes)
                    train_step(model, optimizer, loss_fn, identity, images, masks, record, device)
                compile_seconds = time.perf_counter() - started

            def step(model=model, optimizer=optimizer, loss_fn=loss_fn, record=record) -> int:
                for _ in range(4):
                    train_step(model, optimizer, loss_fn, identity, images, masks, record, device)
                return 4 * len(images)

            works[mode] = step
        rates = interleaved_rates(works, args.warmup, args.reps, device)
        row = {mode: statistics.median(values) for mode, values in rates.items()}
        row["speedup"] = row["compiled"] / row["eager"]
        row["compile_seconds"] = compile_seconds
        results["models"][name] = row
        print(
            f"{name}: eager {row['eager']:.1f}, compiled {row['compiled']:.1f} images/s "
            f"(×{row['speedup']:.2f}); compiling took {compile_seconds:.0f} s",
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "pixelwise" / "inductor"))
    main()
