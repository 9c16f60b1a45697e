"""``pixelwise predict``: image files and folders in, one mask PNG and one overlay PNG per image out.

Masks are written at each input's original size: 0/255 for binary runs, class indices for multi-class
runs. Inputs are never overwritten: the output folder may not be an input folder, and an existing
output file is an error unless ``overwrite`` is set.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import track

from pixelwise.data.imageio import is_image_file, read_image
from pixelwise.data.naming import overlay_name, predicted_mask_name
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write_bytes, remove_stale_temporaries
from pixelwise.masks.instances import write_instances_csv
from pixelwise.masks.postprocess import PostProcess
from pixelwise.predict.predictor import RunPredictor
from pixelwise.predict.segment import segment_images


def collect_inputs(inputs: list[Path], console: Console | None = None) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, not recursive).

    What a folder holds besides images (sub-folders, other files, broken links) is not predicted, and
    ``console`` is told: how many of each, with the first names.
    """
    files: list[Path] = []
    skipped: list[str] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = []
            for path in sorted(item.iterdir()):
                if path.name.startswith("."):
                    continue  # hidden files and our own temporaries are never inputs
                if path.is_file() and is_image_file(path):
                    found.append(path)
                elif path.is_dir():
                    skipped.append(f"{path.name}/ (a folder: predict does not recurse)")
                elif path.is_symlink() and not path.exists():
                    skipped.append(f"{path.name} (a broken link)")
                else:
                    skipped.append(f"{path.name} (not an image file)")
            if not found:
                raise PixelwiseError(f"folder {item} has no image files (.png, .jpg, .bmp, .tif): pass images or a folder of them")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise PixelwiseError(f"input {item} does not exist: pass image files or folders")
    if skipped and console is not None:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        console.print(f"skipped {len(skipped)} item(s) that are not images: {', '.join(skipped[:5])}{more}")
    return files


def output_paths(files: list[Path], inputs: list[Path], out: Path, overwrite: bool) -> list[tuple[Path, Path]]:
    """``(mask_path, overlay_path)`` per input file; refuses unsafe or clashing outputs."""
    if out.exists() and not out.is_dir():
        raise PixelwiseError(f"--out {out} is a file: pass a folder for the masks and overlays")
    out_resolved = out.resolve()
    input_dirs = {Path(i).resolve() for i in inputs if Path(i).is_dir()} | {f.resolve().parent for f in files}
    if out_resolved in input_dirs:
        raise PixelwiseError(f"--out {out} is an input folder: choose a separate folder so no input can be overwritten")
    seen: dict[str, Path] = {}
    paths = []
    for f in files:
        if f.stem in seen:
            raise PixelwiseError(f"{f} and {seen[f.stem]} have the same name '{f.stem}': their masks would collide; "
                                 f"predict them into separate --out folders")
        seen[f.stem] = f
        mask, overlay = out / predicted_mask_name(f.stem), out / overlay_name(f.stem)
        for path in (mask, overlay):
            if path.exists() and not overwrite:
                raise PixelwiseError(f"{path} already exists: choose another --out or pass --overwrite")
        paths.append((mask, overlay))
    return paths


def predict_files(predictor: RunPredictor, inputs: list[Path], out: Path, *, overwrite: bool = False,
                  post: PostProcess = PostProcess(), instances: bool = False, min_area: int = 0,
                  batch_size: int = 8, console: Console | None = None) -> list[Path]:
    """Predict every input image; returns the written mask paths."""
    console = console or Console(stderr=True)
    files = collect_inputs(inputs, console)
    targets = output_paths(files, inputs, out, overwrite)
    if instances and (out / "instances.csv").exists() and not overwrite:
        raise PixelwiseError(f"{out / 'instances.csv'} already exists: choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # partial files of a killed earlier run into the same folder
    instance_rows: list[dict] = []
    written = []
    batches = [list(range(i, min(i + batch_size, len(files)))) for i in range(0, len(files), batch_size)]
    for batch in track(batches, description="predicting", console=console, transient=True):
        # The per-image path of the Python API and `pixelwise serve` too (predict/segment.py).
        results = segment_images(predictor, [read_image(files[i]) for i in batch], post)
        for result, i in zip(results, batch):
            mask_path, overlay_path = targets[i]
            atomic_write_bytes(mask_path, result.png_bytes())
            atomic_write_bytes(overlay_path, result.overlay_png_bytes())
            written.append(mask_path)
            if instances:
                instance_rows += result.instances(files[i].stem, min_area=min_area)
    if instances:
        write_instances_csv(out / "instances.csv", instance_rows)
    console.print(f"wrote {len(written)} masks and overlays to {out}")
    return written
