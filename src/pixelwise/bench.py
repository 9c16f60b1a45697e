"""``pixelwise bench``: throughput and memory on the current machine.

Sections (each figure is the median of ``reps`` repetitions after ``warmup`` untimed ones):

- ``train``: images/s of one optimisation step (forward + loss + backward + AdamW step) at size×size,
  batch ``batch``, for each model, in fp32 NCHW and in pixelwise's fast mode (bf16 autocast +
  channels_last), on batches already in memory (no augmentation: the data pipeline is measured apart);
- ``data``: images/s of the data pipeline: loading the arrays with pixelwise's cache cold (decode +
  resize + cache write) and warm (cache read), and the per-epoch delivery of augmented, normalised
  batches from memory, compared with what training consumes;
- ``inference``: ms per image and images/s at batch 1 and ``batch`` for the torch engine in its default
  mode, in fp32, and for onnxruntime (the exported graph), each through the same ``RunPredictor``
  function ``predict`` uses;
- ``memory``: peak resident memory (VmHWM) of a training process (default recipe at size×size) and of
  inference processes (torch, onnxruntime), each measured in a fresh process.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from rich.table import Table

from pixelwise.config import Recipe, RunConfig, RunRecord, planned_size
from pixelwise.data.augment import build_augment
from pixelwise.data.classes import ClassMap
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_json
from pixelwise.models import MODELS, build_model, model_spec
from pixelwise.runs import RunFolder, save_weights
from pixelwise.runtime import network_input, pick_device, to_unit, use_fast_mode
from pixelwise.train.loop import Training, build_training, run_epoch, train_step

log = logging.getLogger(__name__)

DEFAULTS = Recipe()


@dataclass
class BenchSettings:
    """What ``pixelwise bench`` measures and how often."""

    size: int = 256  # square image side, pixels
    batch: int = DEFAULTS.batch_size  # pixelwise's training batch and the large inference batch
    models: tuple[str, ...] = tuple(MODELS)
    warmup: int = 1  # untimed repetitions before the timed ones
    reps: int = 3  # timed repetitions; figures are their median
    model_seconds: float = 15.0  # training table: no new repetition (beyond 2) after this much timed work
    images: int = 32  # images of the data set for the data pipeline
    data: str | None = None  # data set folder; None: the embedded synthetic set
    memory: bool = True  # measure peak resident memory (fresh processes)
    quick: bool = False

    @classmethod
    def quick_settings(cls, **overrides) -> "BenchSettings":
        """``--quick``: the training table for the default model only, two repetitions."""
        return replace(cls(models=(DEFAULTS.model,), reps=2, quick=True), **overrides)


# ---------------------------------------------------------------------------------------------------------
# Timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_rate(work: Callable[[], int], warmup: int, reps: int, device: torch.device) -> float:
    """Median over ``reps`` timed calls of ``work`` (after ``warmup`` untimed) of items per second.

    ``work()`` does one repetition and returns how many items (images) it processed.
    """
    for _ in range(warmup):
        work()
    rates = []
    for _ in range(max(1, reps)):
        _sync(device)
        started = time.perf_counter()
        count = work()
        _sync(device)
        rates.append(count / (time.perf_counter() - started))
    return float(statistics.median(rates))


def interleaved_rates(
    works: dict[str, Callable[[], int]],
    warmup: int,
    reps: int,
    device: torch.device,
    budget_seconds: float | None = None,
    min_reps: int = 2,
) -> dict[str, list[float]]:
    """Items per second of several works, timed in turns (a, b, a, b, ...) so a change of load hits all.

    After ``warmup`` untimed rounds, up to ``reps`` timed rounds; once ``min_reps`` rounds are done, no new
    round starts after ``budget_seconds`` of timed work (slow fp32 models get fewer repetitions).
    """
    for _ in range(warmup):
        for work in works.values():
            work()
    rates: dict[str, list[float]] = {name: [] for name in works}
    spent = 0.0
    for round_index in range(max(1, reps)):
        if budget_seconds is not None and round_index >= min_reps and spent > budget_seconds:
            break
        for name, work in works.items():
            _sync(device)
            started = time.perf_counter()
            count = work()
            _sync(device)
            seconds = time.perf_counter() - started
            spent += seconds
            rates[name].append(count / seconds)
    return rates


class OtherLoad:
    """CPU used by *other* processes while a section runs, in cores (Linux ``/proc/stat``; None elsewhere).

    On a shared machine this says whether a figure was measured with the cores to itself.
    """

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:3]) + sum(fields[5:7])  # user, nice, system, irq, softirq (not idle, iowait, steal)
        own = os.times()
        return (
            busy / os.sysconf("SC_CLK_TCK"),
            own.user + own.system + own.children_user + own.children_system,
            time.perf_counter(),
        )

    def cores(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(0.0, others) / (end[2] - self.start[2])


# ---------------------------------------------------------------------------------------------------------
# Training


def default_recipe(device: torch.device, size: int | None = None, **changes) -> tuple[Recipe, RunRecord]:
    """The default recipe with ``changes``, and the record a binary run of it starts with on ``device`` (its
    network's normalisation, the precision the loop would use): what ``train_one`` makes, not a copy of it."""
    recipe = DEFAULTS.replace(**changes)
    if size:
        recipe = recipe.replace(size=size)
    classes = ClassMap.plain(2)
    spec = model_spec(recipe.model)
    record = RunRecord(
        num_classes=2,
        classes=classes.to_dict(),
        size=recipe.size or planned_size(2),
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        fast=use_fast_mode(recipe.fast, device),
    )
    return recipe, record


def mode_name(fast: bool, device: torch.device) -> str:
    if not fast:
        return "fp32 NCHW"
    return "bf16 autocast + channels_last" if device.type == "cpu" else "bf16 autocast"


def training_setup(recipe: Recipe, device: torch.device) -> Training:
    """Model, optimiser, loss and augmentation of a binary run: the loop's own :func:`build_training`."""
    training = build_training(recipe, 2, device)
    training.model.train()
    return training


def bench_train(settings: BenchSettings, images: torch.Tensor, masks: torch.Tensor, device: torch.device) -> dict:
    """Training images/s per model, fp32 NCHW and fast mode, on one in-memory batch (no augmentation).

    The two modes of a model are timed in turns; a model gets ``reps`` rounds, or fewer (at least two)
    once ``settings.model_seconds`` of timed steps are spent, so that slow fp32 models fit the time budget.
    """
    batch_images, batch_masks = images[: settings.batch], masks[: settings.batch]
    identity = build_augment("none").to(device)
    results = {}
    for name in settings.models:
        works = {}
        for mode, fast in (("fp32_nchw", False), ("fast", True)):
            torch.manual_seed(0)
            recipe, record = default_recipe(device, model=name, fast=fast)
            training = training_setup(recipe, device)

            def step(training=training, record=record) -> int:
                train_step(
                    training.model,
                    training.optimizer,
                    training.loss_fn,
                    identity,
                    batch_images,
                    batch_masks,
                    record,
                    device,
                )
                return len(batch_images)

            works[mode] = step
        rates = interleaved_rates(works, settings.warmup, settings.reps, device, settings.model_seconds)
        row = {mode: float(statistics.median(values)) for mode, values in rates.items()}
        row["fast_speedup"] = row["fast"] / row["fp32_nchw"]
        row["reps"] = len(rates["fast"])
        results[name] = row
        del works
        gc.collect()
        log.info(f"  train {name}: fp32 {row['fp32_nchw']:.2f}, fast {row['fast']:.2f} images/s")
    return {
        "size": settings.size,
        "batch": len(batch_images),
        "unit": "images/s",
        "fast_mode": mode_name(use_fast_mode(True, device), device),
        "models": results,
    }


def pixelwise_epoch(training: Training, images, masks, recipe: Recipe, record: RunRecord, device) -> int:
    """One epoch of pixelwise's default path: the training loop's own epoch function on a shuffled order."""
    _, seen = run_epoch(
        training.model,
        training.optimizer,
        training.loss_fn,
        training.augment,
        images,
        masks,
        record,
        device,
        torch.randperm(len(images)),
        recipe.batch_size,
    )
    return seen


# ---------------------------------------------------------------------------------------------------------
# Data pipeline


def bench_pairs(settings: BenchSettings) -> list:
    """The image/mask pairs the bench uses: the first ``images`` of ``--data``, else the synthetic set."""
    from pixelwise.data.layouts import find_pairs

    config = DEFAULTS.replace(data=settings.data, size=settings.size, synth_n=settings.images)
    if settings.data and not Path(settings.data).exists():
        raise PixelwiseError(f"--data {settings.data} does not exist: pass a data set folder or leave it out")
    pairs = [p for p in find_pairs(config.data_root()).pairs if p.mask is not None][: settings.images]
    if len(pairs) < 2:
        raise PixelwiseError(
            f"{settings.data or 'the data set'} has {len(pairs)} image/mask pairs; the bench needs at least 2"
        )
    return pairs


def bench_data(settings: BenchSettings, pairs: list, device: torch.device):
    """Data pipeline images/s with pixelwise's array cache cold and warm, and per-epoch batch delivery.

    Returns:
        ``(figures, images, masks)``: the dict of figures and the loaded uint8 arrays
        (N×3×S×S, N×S×S) for the other sections.
    """
    from pixelwise.data.cache import load_arrays

    cold_rates, warm_rates = [], []
    images = masks = None
    with tempfile.TemporaryDirectory(prefix="pixelwise-bench-") as scratch:
        for rep in range(max(1, settings.reps)):
            cache = Path(scratch) / f"cache{rep}"  # a new, empty cache: every pair is decoded and resized
            started = time.perf_counter()
            images, masks = load_arrays(pairs, settings.size, cache, progress=False)
            cold_rates.append(len(pairs) / (time.perf_counter() - started))
            started = time.perf_counter()
            load_arrays(pairs, settings.size, cache, progress=False)
            warm_rates.append(len(pairs) / (time.perf_counter() - started))
    masks = (masks > 0).to(torch.uint8)  # binary benchmark: any lesion class is foreground

    config, record = default_recipe(device)
    augment = build_augment(config.augment).to(device)

    def epoch() -> int:
        """Deliver every image once as augmented, normalised (channels_last) batches, like the loop."""
        order = torch.randperm(len(images))
        for first in range(0, len(images), settings.batch):
            index = order[first : first + settings.batch]
            x, y = augment(to_unit(images[index].to(device)), masks[index].to(device))
            x = network_input(x, record.mean, record.std, record.fast)
        return len(images)

    delivery = median_rate(epoch, settings.warmup, settings.reps, device)
    cold, warm = statistics.median(cold_rates), statistics.median(warm_rates)
    figures = {
        "images": len(pairs),
        "size": settings.size,
        "augment": config.augment,
        "unit": "images/s",
        "load_cold_cache": cold,
        "load_warm_cache": warm,
        "augment_delivery": delivery,
        # First epoch = load everything once, then deliver it; later epochs deliver from memory only.
        "first_epoch_cold_cache": 1.0 / (1.0 / cold + 1.0 / delivery),
        "first_epoch_warm_cache": 1.0 / (1.0 / warm + 1.0 / delivery),
    }
    log.info(f"  data: cold {cold:.0f}, warm {warm:.0f}, augmented delivery {delivery:.0f} images/s")
    return figures, images, masks


# ---------------------------------------------------------------------------------------------------------
# Inference


def make_bench_run(folder: Path, size: int, model: str = DEFAULTS.model) -> Path:
    """A run folder with a freshly initialised (seed 0) binary ``model``: config.json + model.safetensors."""
    torch.manual_seed(0)
    run = RunFolder(folder)
    save_weights(build_model(model, 2, pretrained=False).eval(), run.weights_path)
    recipe, record = default_recipe(torch.device("cpu"), model=model, size=size)
    run.write_config(RunConfig(recipe, record.replace(fast=False)))
    return run.path


def _inference_figures(
    predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, settings: BenchSettings, device: torch.device
) -> dict:
    """ms per image and images/s of ``predict`` at batch 1 and ``settings.batch``."""
    figures = {}
    for batch in (1, settings.batch):
        chunk = x[:batch].to(device)
        calls = max(1, settings.batch // batch)  # a repetition processes about the same number of images

        def work() -> int:
            with torch.inference_mode():
                for _ in range(calls):
                    predict(chunk)
            return calls * batch

        rate = median_rate(work, settings.warmup, settings.reps, device)
        figures[f"batch_{batch}"] = {"images_per_s": rate, "ms_per_image": 1000.0 / rate}
    return figures


def bench_inference(settings: BenchSettings, images: torch.Tensor, device: torch.device, scratch: Path) -> dict:
    """The default model's inference: torch in its fast mode, torch fp32 and onnxruntime, same weights."""
    from pixelwise.deploy.onnx_export import export_run
    from pixelwise.predict.onnx_engine import onnx_predictor
    from pixelwise.predict.torch_engine import torch_predictor

    run = make_bench_run(scratch / "run", settings.size)
    export_run(run)
    x = to_unit(images[: settings.batch].clone())
    fast = use_fast_mode(DEFAULTS.fast, device)
    engines = {
        "torch_default": (
            torch_predictor(run, device=device.type, precision="bf16" if fast else "fp32"),
            mode_name(fast, device),
        ),
        "torch_fp32": (torch_predictor(run, device=device.type), "fp32 NCHW"),
        "onnxruntime": (onnx_predictor(run), "fp32, CPU execution provider, no spinning"),
    }
    results = {"model": DEFAULTS.model, "size": settings.size}
    for name, (predictor, mode) in engines.items():
        results[name] = {"mode": mode, **_inference_figures(predictor.predict_unit, x, settings, predictor.device)}
        large = results[name][f"batch_{settings.batch}"]
        log.info(
            f"  inference {name}: batch 1 {results[name]['batch_1']['ms_per_image']:.1f} ms/image, "
            f"batch {settings.batch} {large['images_per_s']:.1f} images/s"
        )
    return results


# ---------------------------------------------------------------------------------------------------------
# Memory (each measurement in a fresh process, so one does not inherit the other's peak)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (VmHWM on Linux, ru_maxrss elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def _train_memory_child(size: int, images: int, steps: int, threads: int) -> dict:
    """Child process: the default recipe's training at ``size`` with ``images`` uint8 images in memory."""
    torch.set_num_threads(threads)
    baseline = peak_rss_mb()
    device = pick_device()
    recipe, record = default_recipe(device, size=size)
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = (torch.rand(images, size, size, generator=generator) > 0.7).to(torch.uint8)
    training = training_setup(recipe, device)
    for step in range(steps):
        index = torch.randperm(images, generator=generator)[: recipe.batch_size]
        train_step(
            training.model,
            training.optimizer,
            training.loss_fn,
            training.augment,
            data[index],
            labels[index],
            record,
            device,
        )
    return {"baseline_mb": baseline, "peak_mb": peak_rss_mb()}


def _inference_memory_child(run: str, engine: str, size: int, batch: int, calls: int, threads: int) -> dict:
    """Child process: ``calls`` predictions of a ``batch``×3×size×size batch with ``engine``."""
    torch.set_num_threads(threads)
    os.environ.setdefault("PIXELWISE_THREADS", str(threads))
    import onnxruntime  # noqa: F401  (imported before the baseline, like torch, for both engines)

    from pixelwise.predict.engine import make_predictor

    baseline = peak_rss_mb()
    predictor = make_predictor(Path(run), engine)
    images = torch.randint(
        0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    for _ in range(calls):
        predictor.probabilities(images, batch_size=batch)
    return {"baseline_mb": baseline, "peak_mb": peak_rss_mb()}


def in_fresh_process(function: Callable, **kwargs) -> dict:
    """Run a module-level ``function(**kwargs)`` in a new (spawned) Python process and return its result."""
    import multiprocessing

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, **kwargs).result()


def bench_memory(settings: BenchSettings, run: Path) -> dict:
    threads = torch.get_num_threads()
    steps = 3  # the peak is reached by the second step (AdamW allocates its moments in the first)
    train = in_fresh_process(
        _train_memory_child, size=settings.size, images=DEFAULTS.synth_n, steps=steps, threads=threads
    )
    results = {
        "unit": "MiB",
        "what": "peak resident set (VmHWM) of a fresh process; baseline = after imports",
        "train": {
            **train,
            "recipe": f"default ({DEFAULTS.model}, batch {DEFAULTS.batch_size}, "
            f"augment {DEFAULTS.augment}, loss {DEFAULTS.loss}) at {settings.size}px, "
            f"{DEFAULTS.synth_n} images in memory, {steps} steps",
        },
    }
    for engine in ("torch", "onnx"):
        results[f"inference_{engine}"] = in_fresh_process(
            _inference_memory_child,
            run=str(run),
            engine=engine,
            size=settings.size,
            batch=settings.batch,
            calls=steps,
            threads=threads,
        )
        results[f"inference_{engine}"]["batch"] = settings.batch
    log.info(
        f"  memory: train peak {results['train']['peak_mb']:.0f} MiB, inference peak torch "
        f"{results['inference_torch']['peak_mb']:.0f} / onnx {results['inference_onnx']['peak_mb']:.0f} MiB"
    )
    return results


# ---------------------------------------------------------------------------------------------------------
# Machine, report and entry point


def machine_info(device: torch.device) -> dict:
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "environment": {
            name: os.environ.get(name) for name in ("PIXELWISE_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")
        },
    }


def run_bench(settings: BenchSettings) -> dict:
    """Every measurement of ``pixelwise bench``; returns the JSON-able results."""
    for name in settings.models:
        model_spec(name)
    stride = max(model_spec(name).stride for name in (*settings.models, DEFAULTS.model))
    if settings.size % stride or settings.size < stride:
        raise PixelwiseError(f"--size {settings.size}: use a multiple of {stride} (the models' stride)")
    if settings.batch < 2 or settings.reps < 1 or settings.warmup < 0:
        raise PixelwiseError("--batch must be at least 2, --reps at least 1 and --warmup at least 0")
    started = time.perf_counter()
    device = pick_device()
    results: dict = {"machine": machine_info(device), "settings": asdict(settings)}
    pairs = bench_pairs(settings)
    others: dict[str, float | None] = {}
    log.info(f"[bold]data pipeline[/] ({len(pairs)} images at {settings.size}px)")
    load = OtherLoad()
    results["data"], images, masks = bench_data(settings, pairs, device)
    others["data"] = load.cores()
    if len(images) < settings.batch:
        raise PixelwiseError(f"{len(images)} images: the bench needs at least --batch {settings.batch}")
    log.info(f"[bold]training[/] (batch {settings.batch}, {settings.size}px)")
    load = OtherLoad()
    results["train"] = bench_train(settings, images, masks, device)
    others["train"] = load.cores()
    default_train = results["train"]["models"].get(DEFAULTS.model, {}).get("fast")
    if default_train:
        results["data"]["delivery_over_training"] = results["data"]["augment_delivery"] / default_train
    with tempfile.TemporaryDirectory(prefix="pixelwise-bench-") as scratch:
        log.info(f"[bold]inference[/] ({DEFAULTS.model}, {settings.size}px)")
        load = OtherLoad()
        results["inference"] = bench_inference(settings, images, device, Path(scratch))
        others["inference"] = load.cores()
        if settings.memory:
            log.info("[bold]memory[/]")
            results["memory"] = bench_memory(settings, Path(scratch) / "run")
        else:
            results["memory"] = {}
    results["machine"]["other_processes_cores"] = others
    busy = {k: round(v, 2) for k, v in others.items() if v is not None and v > 0.2}
    if busy:
        log.warning(
            f"[yellow]warning:[/] other processes used CPU during {busy} (cores, average): "
            f"those figures are low and noisy"
        )
    results["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["seconds"] = time.perf_counter() - started
    return results


def report_tables(results: dict) -> list[Table]:
    """Rich tables of the results, one per section (the CLI prints them, then :func:`report_footer`)."""
    train = Table(title=f"training images/s ({results['train']['size']}px, batch {results['train']['batch']})")
    for column in ("model", "fp32 NCHW", "fast", "×"):
        train.add_column(column, justify="left" if column == "model" else "right")
    for name, row in results["train"]["models"].items():
        train.add_row(name, f"{row['fp32_nchw']:.2f}", f"{row['fast']:.2f}", f"{row['fast_speedup']:.2f}")
    data = Table(
        title=f"data pipeline images/s ({results['data']['images']} images, augment {results['data']['augment']})"
    )
    for column in ("stage", "images/s"):
        data.add_column(column, justify="left" if column == "stage" else "right")
    for key in (
        "load_cold_cache",
        "load_warm_cache",
        "augment_delivery",
        "first_epoch_cold_cache",
        "first_epoch_warm_cache",
        "delivery_over_training",
    ):
        if key in results["data"]:
            data.add_row(key.replace("_", " "), f"{results['data'][key]:.1f}")
    inference = Table(title=f"inference ({results['inference']['model']}, {results['inference']['size']}px)")
    batches = [k for k in results["inference"]["torch_default"] if k.startswith("batch_")]
    inference.add_column("engine")
    for key in batches:
        inference.add_column(f"{key.replace('_', ' ')}: ms/image", justify="right")
        inference.add_column("images/s", justify="right")
    for name in ("torch_default", "torch_fp32", "onnxruntime"):
        row = results["inference"][name]
        inference.add_row(
            f"{name} ({row['mode']})", *[f"{row[k][m]:.1f}" for k in batches for m in ("ms_per_image", "images_per_s")]
        )
    tables = [train, data, inference]
    if results.get("memory"):
        memory = Table(title="peak resident memory, MiB (fresh process each)")
        for column in ("process", "after imports", "peak"):
            memory.add_column(column, justify="left" if column == "process" else "right")
        for key in ("train", "inference_torch", "inference_onnx"):
            memory.add_row(
                key.replace("_", " "),
                f"{results['memory'][key]['baseline_mb']:.0f}",
                f"{results['memory'][key]['peak_mb']:.0f}",
            )
        tables.append(memory)
    return tables


def report_footer(results: dict) -> str:
    """The line under the tables: how long the bench took and the machine's load before and after."""
    return (
        f"{results['seconds']:.0f} s; load average {results['machine']['load_average_at_start']} → "
        f"{results['machine']['load_average_at_end']}"
    )


def bench(settings: BenchSettings, json_path: Path | None = None) -> dict:
    """Run the bench and write ``json_path`` (atomically) when given; returns the results, which
    :func:`report_tables` and :func:`report_footer` lay out for the terminal."""
    results = run_bench(settings)
    if json_path is not None:
        atomic_write_json(json_path, _finite(results))
        log.info(f"wrote {json_path}")
    return results


def _finite(value):
    """Replace NaN/inf by None so the JSON stays standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
