"""The ``pixelwise`` command. Thin: parse options, call the modules, turn user errors into one line."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from pixelwise.errors import PixelwiseError
from pixelwise.train.config import TrainConfig

app = typer.Typer(
    help="pixelwise: train, evaluate and apply encoder-decoder segmentation networks on 2D images.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Make and inspect data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)
D = TrainConfig()  # the default recipe: one source for the defaults below


def _set_threads() -> None:
    import torch

    # All cores for the math, none spinning in a second pool.
    torch.set_num_threads(int(os.environ.get("PIXELWISE_THREADS", os.cpu_count() or 1)))


@app.command()
def train(
    data: Optional[Path] = typer.Option(None, help="Data set folder (PH2, ISIC, MADS, images/+masks/ or CSV); default: the embedded synthetic set."),
    layout: Optional[str] = typer.Option(None, help="Force a data layout: ph2, isic, mads, folders or csv (default: detected)."),
    model: str = typer.Option(D.model, help="Network name; `pixelwise models` lists them."),
    loss: str = typer.Option(D.loss, help="Loss: bce, dice, bce+dice or focal."),
    augment: str = typer.Option(D.augment, help="Augmentation preset applied on the batch: none, light or strong."),
    epochs: int = typer.Option(D.epochs, help="Maximum number of epochs (with --budget, fitted to the time instead)."),
    budget: Optional[str] = typer.Option(None, help="Training time budget, e.g. 15m: fits epochs and cosine decay to it."),
    size: int = typer.Option(D.size, help="Square network input size in pixels (images are resized to it)."),
    batch_size: int = typer.Option(D.batch_size, "--batch-size", help="Images per optimisation step."),
    optimizer: str = typer.Option(D.optimizer, help="Optimiser: adamw, or adam (the lesson's, no weight decay)."),
    schedule: str = typer.Option(D.schedule, help="Learning-rate schedule: cosine (after warm-up) or constant."),
    warmup_epochs: float = typer.Option(D.warmup_epochs, "--warmup-epochs", help="Epochs of linear learning-rate warm-up."),
    lr: float = typer.Option(D.lr, help="Peak learning rate (after warm-up)."),
    weight_decay: float = typer.Option(D.weight_decay, "--weight-decay", help="AdamW weight decay."),
    patience: int = typer.Option(D.patience, help="Stop after this many epochs without a better validation Dice."),
    seed: int = typer.Option(D.seed, help="Random seed for the split, initialisation, shuffling and augmentation."),
    val_fraction: float = typer.Option(D.val_fraction, "--val-fraction", help="Fraction of pairs held out for validation."),
    test_fraction: float = typer.Option(D.test_fraction, "--test-fraction", help="Fraction of pairs held out for the final test."),
    folds: Optional[int] = typer.Option(None, help="K-fold split: train one model per fold into one run (an ensemble)."),
    fold: Optional[int] = typer.Option(None, help="With --folds K: train only fold i (0..K-1) as a single model."),
    fast: bool = typer.Option(D.fast, "--fast/--no-fast", help="bf16 autocast + channels_last (CPU) or bf16 autocast (CUDA)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Train without the pairs the checker reports as bad (listed)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where decoded, resized arrays are cached (default ~/.cache/pixelwise)."),
    out: Optional[Path] = typer.Option(None, help="Run folder to create (default runs/<time>-<model>)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted run in this folder, with its saved config."),
) -> None:
    """Train a segmentation network; writes a run folder (weights, config, split, per-epoch metrics)."""
    from pixelwise.train.config import parse_duration
    from pixelwise.train.loop import train as train_run
    from pixelwise.train import checkpoint

    _set_threads()
    if resume is not None:
        config = TrainConfig.from_dict(checkpoint.read_config(resume))
        run = resume
    else:
        from pixelwise.losses import LOSSES
        from pixelwise.models import model_spec
        from pixelwise.data.augment import build_augment

        model_spec(model)
        build_augment(augment)
        if fold is not None and (not folds or not 0 <= fold < folds):
            raise PixelwiseError(f"--fold {fold} needs --folds K with 0 <= fold < K")
        if schedule not in ("cosine", "constant"):
            raise PixelwiseError(f"unknown schedule '{schedule}': choose cosine or constant")
        if loss not in LOSSES:
            raise PixelwiseError(f"unknown loss '{loss}': choose one of {', '.join(LOSSES)}")
        if data is not None and not data.exists():
            raise PixelwiseError(f"data folder {data} does not exist: pass --data PATH to a data set folder")
        run = out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}"
        if run.exists() and any(run.iterdir()):
            raise PixelwiseError(f"run folder {run} already exists: continue it with --resume {run} or choose another --out")
        config = TrainConfig(
            data=str(data.resolve()) if data else None, layout=layout, model=model, loss=loss, augment=augment,
            epochs=epochs, optimizer=optimizer, schedule=schedule, warmup_epochs=warmup_epochs, budget_seconds=parse_duration(budget) if budget else None, size=size,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience, seed=seed,
            val_fraction=val_fraction, test_fraction=test_fraction, folds=folds, fold=fold, fast=fast, skip_bad=skip_bad,
            cache_dir=str(cache_dir.resolve()) if cache_dir else None,
        )
    try:
        train_run(config, run, resume=resume is not None, console=console)
    except KeyboardInterrupt:
        console.print(f"interrupted: continue with `pixelwise train --resume {run}`")
        raise typer.Exit(130)


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder made by `pixelwise train`."),
    data: Optional[Path] = typer.Option(None, help="Evaluate on this data set (all pairs) instead of the run's saved split."),
    split: Optional[str] = typer.Option(None, help="Part of the run's saved split: test (default), val, train; or all."),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="Average probabilities over flips and 90° rotations."),
    engine: str = typer.Option("torch", help="Inference engine: torch or onnx (after `pixelwise export`)."),
    fill_holes: bool = typer.Option(False, "--fill-holes", help="Fill holes inside predicted regions."),
    keep_largest: bool = typer.Option(False, "--keep-largest", help="Keep only the largest predicted region."),
    min_area: int = typer.Option(0, "--min-area", help="Drop predicted regions smaller than this many pixels."),
    nsd_tolerance: float = typer.Option(2.0, "--nsd-tolerance", help="Normalised surface Dice tolerance, pixels."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in mm, to report HD95 in mm too."),
) -> None:
    """Measure a trained run; writes metrics.csv, summary.json, instances.csv and report.html."""
    from pixelwise.evaluate.evaluate import evaluate_run
    from pixelwise.predict.predict import PostProcess

    _set_threads()
    evaluate_run(run, data, split, tta="d4" if tta else "none", engine=engine,
                 post=PostProcess(fill_holes, keep_largest, min_area), nsd_tolerance=nsd_tolerance,
                 pixel_size_mm=pixel_size, console=console)


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run folder made by `pixelwise train`."),
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders of images."),
    out: Path = typer.Option(..., help="Folder for <name>_mask.png and <name>_overlay.png (not an input folder)."),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="Average probabilities over flips and 90° rotations."),
    engine: str = typer.Option("torch", help="Inference engine: torch or onnx (after `pixelwise export`)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    fill_holes: bool = typer.Option(False, "--fill-holes", help="Fill holes inside predicted regions."),
    keep_largest: bool = typer.Option(False, "--keep-largest", help="Keep only the largest predicted region."),
    min_area: int = typer.Option(0, "--min-area", help="Drop predicted regions smaller than this many pixels."),
    instances: bool = typer.Option(False, "--instances", help="Also write instances.csv (connected regions and their shape)."),
) -> None:
    """Segment images: one mask (input size, 0/255) and one contour overlay per input."""
    from pixelwise.predict.engine import make_predictor
    from pixelwise.predict.predict import PostProcess, predict_files

    _set_threads()
    predictor = make_predictor(run, engine, "d4" if tta else "none")
    predict_files(predictor, inputs, out, overwrite=overwrite, post=PostProcess(fill_holes, keep_largest, min_area),
                  instances=instances, min_area=min_area, console=console)


@app.command()
def models(size: int = typer.Option(256, help="Input size for the GFLOPs column.")) -> None:
    """List the registered networks with parameters and GFLOPs."""
    from rich.table import Table

    from pixelwise.models import MODELS, build_model, count_gflops, count_parameters

    table = Table(title=f"pixelwise models (GFLOPs per {size}×{size} image, forward)")
    for column in ("name", "parameters", "GFLOPs", "description"):
        table.add_column(column, justify="right" if column in ("parameters", "GFLOPs") else "left")
    for name, spec in MODELS.items():
        model = build_model(name)
        table.add_row(name, f"{count_parameters(model) / 1e6:.2f} M", f"{count_gflops(model, size):.2f}", spec.description)
    Console().print(table)


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder made by `pixelwise train`."),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    out: Optional[Path] = typer.Option(None, help="File to write (default RUN/model.onnx, where `predict --engine onnx` looks)."),
    opset: int = typer.Option(17, help="ONNX opset version (17 or newer)."),
) -> None:
    """Export a trained run to ONNX (dynamic batch/size, normalisation inside) with a JSON description beside it."""
    from pixelwise.export import export_run, sidecar_path

    _set_threads()
    for path in export_run(run, out, format, opset):
        console.print(f"wrote {path} and {sidecar_path(path).name}")


@app.command()
def bench(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    quick: bool = typer.Option(False, "--quick", help="About a minute: the default model only, fewer repetitions."),
    data: Optional[Path] = typer.Option(None, help="Data set folder to read images from (default: the embedded synthetic set)."),
    models: Optional[str] = typer.Option(None, help="Comma-separated models for the training table (default: all; --quick: the default model)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak resident memory in fresh processes."),
    size: int = typer.Option(256, hidden=True, help="Image side in pixels."),
    batch: Optional[int] = typer.Option(None, hidden=True, help="Training and large inference batch."),
    reps: Optional[int] = typer.Option(None, hidden=True, help="Timed repetitions per figure."),
    warmup: Optional[int] = typer.Option(None, hidden=True, help="Untimed repetitions before timing."),
    images: Optional[int] = typer.Option(None, hidden=True, help="Images in the benchmark data set."),
) -> None:
    """Measure training, data, inference throughput and memory on this machine, against the lesson's loop."""
    from pixelwise.bench import BenchSettings, bench as run_bench

    _set_threads()
    overrides = {key: value for key, value in dict(batch=batch, reps=reps, warmup=warmup, images=images).items()
                 if value is not None}
    overrides.update(size=size, memory=memory, data=str(data.resolve()) if data else None)
    if models:
        overrides["models"] = tuple(name.strip() for name in models.split(",") if name.strip())
    settings = BenchSettings.quick_settings(**overrides) if quick else BenchSettings(**overrides)
    run_bench(settings, json_path, console)


def _register_helpers() -> None:
    from pixelwise.data.check import check_command
    from pixelwise.data.synth import synth_command
    from pixelwise.evaluate.score import score_command

    app.command("score", help="Score a folder of predicted masks against a folder of truth masks (no model).")(score_command)
    data_app.command("synth", help="Write the embedded synthetic dermoscopy-like data set (images/ + masks/).")(synth_command)
    data_app.command("check", help="Detect a data set's layout, show its statistics and list every problem.")(check_command)


_register_helpers()


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except PixelwiseError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
