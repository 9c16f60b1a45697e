"""The ``pixelwise`` command: every command is defined here, and only here. Thin: parse options, call the
library, turn user errors (:class:`~pixelwise.errors.PixelwiseError`) into one line and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console

from pixelwise.choices import choices_help, choose
from pixelwise.config import CLASS_WEIGHTS, FITS, KEEP, PREDICT_TTA, Recipe
from pixelwise.data.augment_presets import PRESETS
from pixelwise.data.layouts import LAYOUTS
from pixelwise.data.synth_sets import SYNTH_SETS
from pixelwise.errors import PixelwiseError
from pixelwise.losses import LOSSES
from pixelwise.masks.instance_decode import TASKS
from pixelwise.predict.tta import TTA_MODES
from pixelwise.train.optim import OPTIMIZERS
from pixelwise.train.schedule import SCHEDULES

app = typer.Typer(
    help="pixelwise: train, evaluate and apply encoder-decoder segmentation networks on 2D images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Make and inspect data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)


@app.callback()
def _output(verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show debug messages.")) -> None:
    """The library logs and reports progress; the CLI shows both on stderr (pixelwise.reporting)."""
    from pixelwise.reporting import use_cli_output

    use_cli_output(verbose)


D = Recipe()  # the default recipe: one source for the defaults below

# Options shared by evaluate, predict (and serve): declared once.
RunArg = Annotated[Path, typer.Argument(help="Run folder made by `pixelwise train`.")]
# The help of every option taking a name derives from its table (pixelwise.choices): one row per name.
TTA_HELP = f"Average probabilities over test-time views, {PREDICT_TTA}: {TTA_MODES[PREDICT_TTA].description}"
TtaOpt = Annotated[
    bool,
    typer.Option(
        "--tta/--no-tta", help=TTA_HELP + " (on by default: measured more accurate; --tta-mode picks other views)."
    ),
]
TtaModeOpt = Annotated[
    Optional[str], typer.Option("--tta-mode", help=f"The views --tta averages: {choices_help(TTA_MODES, PREDICT_TTA)}.")
]
ServeTtaOpt = Annotated[
    bool, typer.Option("--tta/--no-tta", help=TTA_HELP + " (off by default here: the passes cost latency).")
]
LayoutOpt = Annotated[
    Optional[str], typer.Option("--layout", help=f"Force a data layout (default: detected): {choices_help(LAYOUTS)}.")
]
EngineOpt = Annotated[str, typer.Option(help="Inference engine: torch or onnx (after `pixelwise export`).")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="torch engine arithmetic: fp32 (same masks as ONNX) or bf16 (faster on AMX/AVX-512-BF16 CPUs and GPUs; "
        "moves a few border pixels)."
    ),
]
FillHolesOpt = Annotated[bool, typer.Option("--fill-holes", help="Fill holes inside predicted regions.")]
KeepLargestOpt = Annotated[bool, typer.Option("--keep-largest", help="Keep only the largest predicted region.")]
MinAreaOpt = Annotated[
    int, typer.Option("--min-area", min=0, help="Drop predicted regions smaller than this many pixels.")
]
NsdOpt = Annotated[float, typer.Option("--nsd-tolerance", min=0.0, help="Normalised surface Dice tolerance, pixels.")]
PixelSizeOpt = Annotated[
    Optional[float], typer.Option("--pixel-size", help="Pixel side in mm, to report HD95 in mm too.")
]


def _post(fill_holes: bool, keep_largest: bool, min_area: int):
    from pixelwise.masks.postprocess import PostProcess

    return PostProcess(fill_holes, keep_largest, min_area)


def _tta_mode(tta: bool, mode: Optional[str]) -> str:
    """The test-time augmentation ``--tta/--no-tta`` and ``--tta-mode`` ask for: the mode named, else
    :data:`~pixelwise.config.PREDICT_TTA` or ``none``."""
    if mode is None:
        return PREDICT_TTA if tta else "none"
    choose("--tta-mode", mode, TTA_MODES)
    if not tta and mode != "none":
        raise PixelwiseError(f"--no-tta and --tta-mode {mode} contradict: drop --no-tta to average {mode}'s views")
    return mode


def _numbers(option: str, text: str | None) -> tuple[float, ...]:
    """``"1,0.5"`` → ``(1.0, 0.5)``; None → ``()``."""
    if text is None:
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise PixelwiseError(f"{option} {text}: give numbers separated by commas, e.g. 1,2") from None


def _set_threads() -> None:
    from pixelwise.runtime import set_threads

    set_threads()


@app.command()
def train(
    ctx: typer.Context,
    data: Optional[list[Path]] = typer.Option(
        None,
        help="Data set folder (PH2, ISIC, MADS, images/+masks/ or CSV); default: the embedded synthetic set. "
        "Repeat it to train on several sets at once (each checked and split on its own, as a run on it alone "
        "would split it; validation and evaluation report each set).",
    ),
    data_weights: Optional[str] = typer.Option(
        None,
        "--data-weights",
        help="With several --data: how many times an epoch each image of each set is drawn, e.g. 1,2 (the second "
        "set's images twice), 1,0.5 (a random half of the second) or 1,1 (every image once); default balanced: "
        "each set as many images an epoch as the smallest set has.",
    ),
    layout: LayoutOpt = None,
    model: str = typer.Option(D.model, help="Network name; `pixelwise models` lists them."),
    loss: str = typer.Option(D.loss, help=f"Loss: {choices_help(LOSSES, D.loss)}."),
    augment: str = typer.Option(
        D.augment, help=f"Augmentation preset applied on the batch: {choices_help(PRESETS, D.augment)}."
    ),
    epochs: int = typer.Option(D.epochs, help="Maximum number of epochs (with --budget, fitted to the time instead)."),
    budget: Optional[str] = typer.Option(
        None,
        help="Training time budget, e.g. 15m: fits epochs and cosine decay to it "
        "(a note says when it fits fewer than 30 epochs here).",
    ),
    size: int = typer.Option(
        D.size,
        help="Square network input side in pixels (squash: images are resized to it; tiles: the tile side); 0: "
        "planned from the data (squash: 128 for two classes, 160 for more; tiles: 256).",
    ),
    scale: str = typer.Option(
        D.scale,
        "--scale",
        help="How the network sees images: auto (0): planned from the data's object sizes, the reason logged; "
        "squash: every image resized to one --size square (as before tiles); a factor such as 1.0 (native "
        "resolution) or 0.5: images resized by it, aspect kept, trained on random crops and predicted in "
        "overlapping tiles of --size.",
    ),
    fit: str = typer.Option(
        D.fit,
        help=f"How images meet the square input: {choices_help(FITS, D.fit)}.",
    ),
    task: str = typer.Option(D.task, "--task", help=f"What the run gives per image: {choices_help(TASKS, D.task)}."),
    batch_size: int = typer.Option(D.batch_size, "--batch-size", help="Images per optimisation step (at least 2)."),
    optimizer: str = typer.Option(D.optimizer, help=f"Optimiser: {choices_help(OPTIMIZERS, D.optimizer)}."),
    schedule: str = typer.Option(D.schedule, help=f"Learning-rate schedule: {choices_help(SCHEDULES, D.schedule)}."),
    warmup_epochs: float = typer.Option(
        D.warmup_epochs, "--warmup-epochs", help="Epochs of linear learning-rate warm-up."
    ),
    lr: float = typer.Option(D.lr, help="Peak learning rate (after warm-up)."),
    weight_decay: float = typer.Option(D.weight_decay, "--weight-decay", help="AdamW weight decay."),
    encoder_lr_scale: float = typer.Option(
        D.encoder_lr_scale,
        "--encoder-lr-scale",
        help=(
            "The ImageNet-pretrained encoder learns at --lr times this (e.g. 0.1: gentler on what ImageNet taught "
            "it); only for networks with one (`pixelwise models`)."
        ),
    ),
    ema: bool = typer.Option(
        D.ema,
        "--ema/--no-ema",
        help=(
            "Validate and keep an exponential moving average of the weights (about the last ninth of the steps) "
            "instead of the last step's."
        ),
    ),
    patience: Optional[int] = typer.Option(
        D.patience,
        help=(
            "Stop after this many epochs without a better validation Dice (default: never; the schedule runs to its "
            "end). Use with --keep best."
        ),
    ),
    keep: str = typer.Option(
        D.keep,
        help=f"Weights to keep: {choices_help(KEEP, D.keep)}.",
    ),
    seed: int = typer.Option(D.seed, help="Random seed for the split, initialisation, shuffling and augmentation."),
    split: Optional[Path] = typer.Option(
        None,
        "--split",
        help=(
            "Use this saved split (a split.json, or a run folder holding one) instead of making one from --seed: the "
            "same train/val/test images across seeds and recipes, or a split of your own."
        ),
    ),
    val_fraction: float = typer.Option(
        D.val_fraction, "--val-fraction", help="Fraction of pairs held out for validation."
    ),
    test_fraction: float = typer.Option(
        D.test_fraction, "--test-fraction", help="Fraction of pairs held out for the final test."
    ),
    num_classes: Optional[int] = typer.Option(
        None,
        "--num-classes",
        help=(
            "Declare the class count (background included) instead of inferring it from the masks; a mask value at "
            "or above it is an error."
        ),
    ),
    labels: Optional[Path] = typer.Option(
        None,
        "--labels",
        help=(
            "Label file naming the classes: labels.txt ('INDEX NAME [R G B]' lines; a class named void is ignored) "
            "or labels.json. Default: labels.txt/labels.json in the data folder, if any."
        ),
    ),
    merge: Optional[str] = typer.Option(
        None,
        "--merge",
        help=(
            "Train merged classes, e.g. 'upper=blouse,coat,shirt;lower=pants,jeans' (label names or values), or a "
            "file with one NEW=LABEL,... per line. Labels in no group join the background unless a group lists '*'."
        ),
    ),
    ignore_index: Optional[list[int]] = typer.Option(
        None,
        "--ignore-index",
        help="Mask value whose pixels count in no loss and no metric (void), e.g. 255 or 11; repeatable.",
    ),
    colors: Optional[str] = typer.Option(
        None, "--colors", help="Colour → mask value map for RGB masks, e.g. '0,0,0=0;255,0,0=1;128,128,128=255'."
    ),
    class_weights: str = typer.Option(
        D.class_weights,
        "--class-weights",
        help=f"Cross-entropy class weights: {choices_help(CLASS_WEIGHTS, D.class_weights)}.",
    ),
    folds: Optional[int] = typer.Option(
        None, help="K-fold split: train one model per fold into one run (an ensemble)."
    ),
    fold: Optional[int] = typer.Option(None, help="With --folds K: train only fold i (0..K-1) as a single model."),
    fast: bool = typer.Option(
        D.fast, "--fast/--no-fast", help="bf16 autocast + channels_last (CPU) or bf16 autocast (CUDA)."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Train without the pairs the checker reports as bad (listed)."
    ),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Where decoded, resized arrays are cached (default ~/.cache/pixelwise)."
    ),
    out: Optional[Path] = typer.Option(None, help="Run folder to create (default runs/<time>-<model>)."),
    resume: Optional[Path] = typer.Option(
        None, help="Continue the interrupted run in this folder, with its saved config."
    ),
    init: Optional[Path] = typer.Option(
        None,
        "--init",
        help=(
            "Start from this run's weights (fine-tuning, e.g. ISIC → PH2) instead of the network's own initialisation."
        ),
    ),
) -> None:
    """Train a segmentation network; writes a run folder (weights, config, split, per-epoch metrics)."""
    from pixelwise.config import parse_duration
    from pixelwise.data.split import load_split
    from pixelwise.runs import RunFolder
    from pixelwise.train.data import split_file
    from pixelwise.train.loop import train as train_run

    if resume is not None:
        folder = RunFolder(resume)
        recipe = folder.load_config().recipe.validate()
        given = [
            name
            for name, value in ctx.params.items()
            if name != "resume" and getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
        ]
        if given:
            names = ", ".join("--" + name.replace("_", "-") for name in given)
            console.print(f"--resume: ignoring {names}; the run continues with its saved {folder.config_path}")
    else:
        recipe = Recipe(
            data=str(data[0].resolve()) if data else None,
            more_data=tuple(str(path.resolve()) for path in (data or [])[1:]),
            data_weights=_numbers("--data-weights", data_weights),
            layout=layout,
            model=model,
            loss=loss,
            augment=augment,
            epochs=epochs,
            optimizer=optimizer,
            schedule=schedule,
            warmup_epochs=warmup_epochs,
            budget_seconds=parse_duration(budget) if budget is not None else None,
            size=size,
            fit=fit,
            scale=scale,
            task=task,
            batch_size=batch_size,
            lr=lr,
            encoder_lr_scale=encoder_lr_scale,
            weight_decay=weight_decay,
            ema=ema,
            patience=patience,
            keep=keep,
            seed=seed,
            split=str(split.resolve()) if split else None,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            folds=folds,
            fold=fold,
            fast=fast,
            num_classes=num_classes,
            skip_bad=skip_bad,
            cache_dir=str(cache_dir.resolve()) if cache_dir else None,
            init=str(init.resolve()) if init else None,
            labels=str(labels.resolve()) if labels else None,
            merge=str(Path(merge).resolve()) if merge and "=" not in merge and Path(merge).is_file() else merge,
            ignore_index=tuple(ignore_index or ()),
            colors=colors,
            class_weights=class_weights,
        ).validate()  # before anything is written: a refused option leaves no folder behind
        if split is not None:
            load_split(split_file(split))  # a missing or malformed --split file, refused before writing too
        folder = RunFolder(out) if out else RunFolder.new_name(model)
        if not folder.is_empty():
            raise PixelwiseError(
                f"run folder {folder.path} already exists: continue it with --resume {folder.path} "
                f"or choose another --out"
            )
    _set_threads()
    try:
        train_run(recipe, folder.path, resume=resume is not None)
    except KeyboardInterrupt:
        console.print(f"interrupted: continue with `pixelwise train --resume {folder.path}`")
        raise typer.Exit(130)


@app.command()
def evaluate(
    run: RunArg,
    data: Optional[Path] = typer.Option(
        None,
        help="Evaluate on this data set (all pairs) instead of the run's saved split; one of the run's own --data "
        "sets: that set's images of --split only (eval-SPLIT-SET).",
    ),
    split: Optional[str] = typer.Option(
        None, help="Part of the run's saved split: test (default), val, train; or all."
    ),
    tta: TtaOpt = True,
    tta_mode: TtaModeOpt = None,
    engine: EngineOpt = "torch",
    precision: PrecisionOpt = "fp32",
    fill_holes: FillHolesOpt = False,
    keep_largest: KeepLargestOpt = False,
    min_area: MinAreaOpt = 0,
    nsd_tolerance: NsdOpt = 2.0,
    pixel_size: PixelSizeOpt = None,
    cache_dir: Optional[Path] = typer.Option(
        None,
        "--cache-dir",
        help="Where decoded arrays are cached (default ~/.cache/pixelwise; the run's own setting is not trusted).",
    ),
    no_threshold_curve: bool = typer.Option(
        False,
        "--no-threshold-curve",
        help="Do not predict the validation images for the report's threshold curve (binary runs): faster.",
    ),
) -> None:
    """Measure a trained run; writes metrics.csv, summary.json, instances.csv and report.html."""
    from pixelwise.evaluate.evaluate import evaluate_run

    mode = _tta_mode(tta, tta_mode)
    _set_threads()
    result = evaluate_run(
        run,
        data,
        split,
        tta=mode,
        engine=engine,
        precision=precision,
        post=_post(fill_holes, keep_largest, min_area),
        nsd_tolerance=nsd_tolerance,
        pixel_size_mm=pixel_size,
        cache_dir=cache_dir,
        threshold_curve=not no_threshold_curve,
    )
    for table in result.tables:
        Console().print(table)


@app.command()
def predict(
    run: RunArg,
    inputs: Optional[List[Path]] = typer.Argument(
        None, help="Image files, video files (.mp4 .mov .avi .mkv .webm) and/or folders of them."
    ),
    out: Path = typer.Option(..., help="Folder for <name>_mask.png and <name>_overlay.png (not an input folder)."),
    tta: TtaOpt = True,
    tta_mode: TtaModeOpt = None,
    engine: EngineOpt = "torch",
    precision: PrecisionOpt = "fp32",
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    fill_holes: FillHolesOpt = False,
    keep_largest: KeepLargestOpt = False,
    min_area: MinAreaOpt = 0,
    instances: bool = typer.Option(
        False, "--instances", help="Also write instances.csv (connected regions and their shape)."
    ),
    manifest: Optional[Path] = typer.Option(
        None, "--manifest", help="A file listing image paths (one per line, or a CSV column 'image'), relative to it."
    ),
    shard: Optional[str] = typer.Option(
        None,
        "--shard",
        help=(
            "Predict only part i of N (i/N, 0-based) of the sorted inputs, or 'auto' from RANK/WORLD_SIZE or a SLURM "
            "job array; implies --skip-existing."
        ),
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Leave images whose mask and overlay exist already (re-run a killed job safely)."
    ),
    merge: bool = typer.Option(
        False, "--merge", help="Only join the per-shard instances CSVs in --out into instances.csv."
    ),
    cutout: bool = typer.Option(
        False,
        "--cutout",
        help="Binary runs: also write <name>_cutout.png, the image with "
        "the foreground's alpha (RGBA; edges refined by a guided filter on the image).",
    ),
    background: Optional[str] = typer.Option(
        None,
        "--background",
        metavar="blur|COLOR|IMAGE",
        help=(
            "Binary runs: also write <name>_background.png, the foreground over 'blur' (the image blurred), a colour "
            "(#rrggbb, r,g,b or a name such as white) or an image file (scaled to cover, centre-cropped)."
        ),
    ),
    every: int = typer.Option(
        1, "--every", min=1, help="Videos: predict every N-th frame; the frames between reuse the last mask."
    ),
    smooth: float = typer.Option(
        0.5,
        "--smooth",
        help="Videos: weight of the newest frame in the moving average of the probabilities that keeps masks "
        "from flickering (0..1; 1 = off; moving pixels take the new frame).",
    ),
) -> None:
    """Segment images and videos: one mask (input size, 0/255) and one contour overlay per input."""
    from pixelwise.predict.predict import Shard, merge_instance_shards, predict_files
    from pixelwise.predict.video import VideoOptions

    mode = _tta_mode(tta, tta_mode)
    if merge:
        console.print(f"wrote {merge_instance_shards(out)}")
        return
    from pixelwise.predict.engine import make_predictor

    part = Shard.parse(shard)
    _set_threads()
    predictor = make_predictor(run, engine, mode, precision)
    predict_files(
        predictor,
        inputs or [],
        out,
        overwrite=overwrite,
        post=_post(fill_holes, keep_largest, min_area),
        instances=instances,
        min_area=min_area,
        shard=part,
        skip_existing=skip_existing or shard is not None,
        manifest=manifest,
        cutout=cutout,
        background=background,
        video=VideoOptions(every=every, smooth=smooth),
    )


@app.command()
def serve(
    run: RunArg,
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. Loopback by default; the server has no "
        "authentication, so expose it (0.0.0.0) only on a trusted network.",
    ),
    port: int = typer.Option(8000, help="TCP port (0: any free port; the address is printed)."),
    engine: EngineOpt = "torch",
    precision: PrecisionOpt = "fp32",
    tta: ServeTtaOpt = False,
    max_batch: int = typer.Option(
        4,
        "--max-batch",
        help="Most images per network call (1 turns batching off; larger batches pay on GPUs, less on CPUs).",
    ),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", help="How long a batch that is not full waits for more images, ms."
    ),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests in progress at once; more are answered 503."),
    max_body_mb: float = typer.Option(
        40.0, "--max-body-mb", help="Largest upload in MiB (413 above; counted as it arrives)."
    ),
    max_pixels: int = typer.Option(
        40_000_000,
        "--max-pixels",
        help="Largest image width × height (413 above; read from the header before decoding).",
    ),
    max_pixels_in_flight: int = typer.Option(
        120_000_000,
        "--max-pixels-in-flight",
        help=(
            "Decoded pixels held by requests at once (503 above; bounds memory under a flood of large images, about "
            "4 bytes a pixel; a format=cutout request counts each pixel 4 times: its probabilities and matte)."
        ),
    ),
    timeout: float = typer.Option(30.0, help="Seconds from the end of an upload to its result (504 after)."),
    fill_holes: FillHolesOpt = False,
    keep_largest: KeepLargestOpt = False,
    min_area: MinAreaOpt = 0,
) -> None:
    """Serve a run over HTTP: POST /v1/segment (mask PNG, JSON or overlay), GET /v1/model, and a web page at /."""
    from pixelwise.serve.server import run_server
    from pixelwise.serve.settings import ServeSettings

    _set_threads()
    settings = ServeSettings(
        engine=engine,
        precision=precision,
        tta=tta,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_body_mb=max_body_mb,
        max_pixels=max_pixels,
        max_pixels_in_flight=max_pixels_in_flight,
        timeout=timeout,
        fill_holes=fill_holes,
        keep_largest=keep_largest,
        min_area=min_area,
    ).validate()
    run_server(run, settings, host, port)


@app.command()
def score(
    truth_dir: Path = typer.Argument(
        ...,
        help="Folder of truth masks (e.g. ISIC_0000000_segmentation.png); for "
        "instance predictions, instance truth (DSB 2018, VOC, COCO JSON, id PNGs).",
    ),
    pred_dir: Annotated[
        Optional[Path],
        typer.Argument(
            help="Folder of predicted masks, one per truth, named by image ID (a `predict --out` folder works as it "
            "is). "
            "<ID>_instances.png files (instance-id images) are scored object by object against instance truth "
            "(DSB 2018, id PNGs, VOC, COCO JSON)."
        ),
    ] = None,
    json: Optional[Path] = typer.Option(None, "--json", help="Write per-image and mean metrics to this JSON file."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write the per-image table to this CSV file."),
    nsd_tolerance: NsdOpt = 2.0,
    pixel_size: PixelSizeOpt = None,
    labels: Annotated[
        Optional[Path],
        typer.Option(
            "--labels",
            help=(
                "Label file naming the classes 0..K-1 (labels.txt 'INDEX NAME' lines, a class named void is ignored; "
                "or labels.json): score the masks as K classes. Default: masks with values above 1 are scored as "
                "classes 0..max."
            ),
        ),
    ] = None,
    ignore_index: Annotated[
        Optional[List[int]],
        typer.Option(
            "--ignore-index",
            help="Truth mask value of void pixels, left out of every metric (e.g. 255, or 11 for CamVid); repeatable.",
        ),
    ] = None,
    coco_results: Annotated[
        Optional[Path],
        typer.Option(
            "--coco-results",
            help="Instead of PRED_DIR: a COCO results JSON (RLE masks, scores) scored object by object "
            "against instance truth.",
        ),
    ] = None,
) -> None:
    """Score a folder of predicted masks against a folder of truth masks (ISIC conventions; per class for
    multi-class masks), or instance predictions object by object (COCO AP, DSB, PQ), no model."""
    from pixelwise.evaluate.score import (
        format_class_table,
        format_instance_table,
        format_summary_table,
        instance_predictions,
        score_folders,
        score_instances,
        write_class_csv,
        write_confusion_csv,
        write_instance_json,
        write_rows_csv,
        write_score_json,
    )

    out = Console(stderr=False)
    if coco_results is not None or pred_dir is None or instance_predictions(pred_dir):
        pixel_options = [
            name
            for name, value in (("--labels", labels), ("--ignore-index", ignore_index), ("--pixel-size", pixel_size))
            if value
        ]
        if pixel_options:
            raise PixelwiseError(
                f"{', '.join(pixel_options)}: options of mask scoring; objects are scored without them, drop them"
            )
        objects = score_instances(truth_dir, pred_dir, coco_results)
        out.print(format_instance_table(objects.scores, title=f"{pred_dir or coco_results} vs {truth_dir}"))
        if objects.unmatched_predictions:
            names = [getattr(p, "name", p) for p in objects.unmatched_predictions]
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            out.print(f"{len(names)} prediction(s) without a truth image, ignored: {', '.join(names[:10])}{more}")
        for note in objects.notes[:10]:
            out.print(f"note: {note}")
        if json is not None:
            out.print(f"wrote {write_instance_json(json, objects)}")
        if csv is not None:
            out.print(f"wrote {write_rows_csv(csv, objects.rows)}")
        return
    result = score_folders(
        truth_dir,
        pred_dir,
        nsd_tolerance=nsd_tolerance,
        pixel_size_mm=pixel_size,
        labels=labels,
        ignore=tuple(ignore_index or ()),
    )
    out.print(format_summary_table(result.summary, title=f"{pred_dir} vs {truth_dir}"))
    if result.multiclass is not None:
        out.print(format_class_table(result.multiclass))
    missing_distances = result.summary["missing"].get("hd95", 0)
    if missing_distances:
        out.print(f"hd95/nsd missing for {missing_distances} image(s) with an empty truth or prediction")
    if result.unmatched_predictions:
        shown = ", ".join(p.name for p in result.unmatched_predictions[:10])
        more = f" and {len(result.unmatched_predictions) - 10} more" if len(result.unmatched_predictions) > 10 else ""
        out.print(f"{len(result.unmatched_predictions)} prediction(s) without a truth mask, ignored: {shown}{more}")
    for note in result.notes[:10]:
        out.print(f"note: {note}")
    if json is not None:
        summary = result.summary
        extra = {
            "std": summary["std"],
            "median": summary["median"],
            "pooled_dice": summary["pooled_dice"],
            "n": summary["n"],
        }
        if result.multiclass is not None:
            extra["multiclass"] = result.multiclass
        write_score_json(json, result.rows, summary["mean"], extra=extra)
        out.print(f"wrote {json}")
    if csv is not None:
        write_rows_csv(csv, result.rows)
        out.print(f"wrote {csv}")
        if result.multiclass is not None:  # beside it: <stem>_per_class.csv and <stem>_confusion.csv
            for suffix, write in (("_per_class", write_class_csv), ("_confusion", write_confusion_csv)):
                path = csv.with_name(csv.stem + suffix + csv.suffix)
                write(path, result.multiclass)
                out.print(f"wrote {path}")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Argument(..., help="Folder to write the set into (new or empty)."),
    n: int = typer.Option(400, "--n", help="Number of images to generate."),
    size: int = typer.Option(128, "--size", help="Image height and width in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
    task: str = typer.Option("semantic", "--task", help=f"Which set: {choices_help(SYNTH_SETS, 'semantic')}."),
) -> None:
    """Write an embedded synthetic data set: lesions (semantic, the default) or nuclei (instances)."""
    from pixelwise.data.synth_sets import make_synth

    make_synth(task, out, n=n, size=size, seed=seed, progress=True)
    where = f"{out}/images and {out}/masks" if task == "semantic" else f"{out}/ID/images and {out}/ID/masks"
    Console().print(f"synth set ready: {n} images of {size}×{size} px in {where} (seed {seed})")


@data_app.command("check")
def data_check(
    path: Path = typer.Argument(..., help="Dataset folder as downloaded (or a CSV with columns image,mask)."),
    layout: LayoutOpt = None,
    colors: Optional[str] = typer.Option(
        None, "--colors", help="Colour→class map for RGB masks, e.g. '0,0,0=0;255,0,0=1'."
    ),
    num_classes: Optional[int] = typer.Option(
        None, "--num-classes", help="Declared class count (background included); default: inferred."
    ),
    labels: Optional[Path] = typer.Option(
        None,
        "--labels",
        help="Label file naming the classes (as for train); default: labels.txt/labels.json in the data folder.",
    ),
    merge: Optional[str] = typer.Option(
        None, "--merge", help="Check the merged classes train would use, e.g. 'upper=blouse,coat;lower=pants'."
    ),
    ignore_index: Optional[list[int]] = typer.Option(
        None, "--ignore-index", help="Void mask value (repeatable), as for train."
    ),
    strict: bool = typer.Option(False, "--strict", help="Also exit 1 when there are only warnings."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Cache folder (default ~/.cache/pixelwise or $PIXELWISE_CACHE)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Decode every file again; read and write no cache."),
) -> None:
    """Detect a data set's layout, show its statistics and list every problem with its file."""
    from pixelwise.data.check import check_with_classes, format_report
    from pixelwise.data.classes import require_label_file
    from pixelwise.data.imageio import parse_colors
    from pixelwise.data.layouts import find_pairs

    colour_map = parse_colors(colors) if colors else None
    if labels is not None:
        require_label_file(labels)
    index = find_pairs(path, layout)
    report, class_map = check_with_classes(
        index,
        labels=labels,
        merge=merge,
        ignore=tuple(ignore_index or ()),
        colors=colour_map,
        num_classes=num_classes,
        cache_dir=cache_dir,
        use_cache=not no_cache,
    )
    Console(highlight=False).print(format_report(report), soft_wrap=True)  # soft wrap: a long path stays whole
    if report.good_pairs:  # what `train --scale auto` plans from: object and class sizes at full resolution
        from pixelwise.data.classes import ClassMap
        from pixelwise.data.objects import format_object_stats, measure_pairs

        classes = class_map or ClassMap.plain(report.num_classes, tuple(ignore_index or ()))
        stats = measure_pairs(report.good_pairs, classes, colour_map)
        Console(highlight=False).print("\n".join(format_object_stats(stats)), soft_wrap=True)
    if report.errors or (strict and report.problems):
        raise typer.Exit(1)


@app.command()
def models(size: int = typer.Option(256, help="Input size for the GFLOPs column.")) -> None:
    """List the registered networks with parameters and GFLOPs."""
    from rich.table import Table

    from pixelwise.models import MODELS, build_model, count_gflops, count_parameters

    table = Table(title=f"pixelwise models (GFLOPs per {size}×{size} image, forward)")
    for column in ("name", "parameters", "GFLOPs", "pretrained", "description"):
        table.add_column(column, justify="right" if column in ("parameters", "GFLOPs") else "left")
    for name, spec in MODELS.items():
        model = build_model(name, pretrained=False)
        table.add_row(
            name,
            f"{count_parameters(model) / 1e6:.2f} M",
            f"{count_gflops(model, size):.2f}",
            "ImageNet" if spec.pretrained else "",
            spec.description,
        )
    Console().print(table)


@app.command()
def export(
    run: RunArg,
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    out: Optional[Path] = typer.Option(
        None, help="File to write (default RUN/model.onnx, where `predict --engine onnx` looks)."
    ),
    opset: int = typer.Option(17, help="ONNX opset version (17 or newer)."),
) -> None:
    """Export a trained run to ONNX (dynamic batch/size, normalisation inside) with a JSON description beside it."""
    from pixelwise.deploy.contract import sidecar_path
    from pixelwise.deploy.onnx_export import export_run

    _set_threads()
    for path in export_run(run, out, format, opset):
        console.print(f"wrote {path} and {sidecar_path(path).name}")


@app.command()
def bench(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    quick: bool = typer.Option(False, "--quick", help="About a minute: the default model only, fewer repetitions."),
    data: Optional[Path] = typer.Option(
        None, help="Data set folder to read images from (default: the embedded synthetic set)."
    ),
    models: Optional[str] = typer.Option(
        None, help="Comma-separated models for the training table (default: all; --quick: the default model)."
    ),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak resident memory in fresh processes."),
    size: int = typer.Option(256, hidden=True, help="Image side in pixels."),
    batch: Optional[int] = typer.Option(None, hidden=True, help="Training and large inference batch."),
    reps: Optional[int] = typer.Option(None, hidden=True, help="Timed repetitions per figure."),
    warmup: Optional[int] = typer.Option(None, hidden=True, help="Untimed repetitions before timing."),
    images: Optional[int] = typer.Option(None, hidden=True, help="Images in the benchmark data set."),
) -> None:
    """Measure training, data, inference throughput and memory on this machine, against the lesson's loop."""
    from pixelwise.bench import BenchSettings, report_footer, report_tables
    from pixelwise.bench import bench as run_bench

    _set_threads()
    overrides = {
        key: value
        for key, value in dict(batch=batch, reps=reps, warmup=warmup, images=images).items()
        if value is not None
    }
    overrides.update(size=size, memory=memory, data=str(data.resolve()) if data else None)
    if models:
        overrides["models"] = tuple(name.strip() for name in models.split(",") if name.strip())
    settings = BenchSettings.quick_settings(**overrides) if quick else BenchSettings(**overrides)
    results = run_bench(settings, json_path)
    out = Console()
    for table in report_tables(results):
        out.print(table)
    out.print(report_footer(results))


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except PixelwiseError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as error:
        # The file system refused (permissions, a full disk, a path through a file, a link gone meanwhile):
        # the user's to fix, so one line naming the file, not a traceback.
        where = error.filename or "a file"
        console.print(
            f"[bold red]error:[/] {where}: {error.strerror or error}; check that the path exists and is "
            f"writable (or choose another folder)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
