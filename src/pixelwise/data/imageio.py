"""Reading images and masks from disk into the in-memory conventions of pixelwise.

* :func:`read_image` returns ``uint8`` H×W×3 RGB, whatever the file holds (greyscale, palette, RGBA,
  16-bit, CMYK), with the EXIF orientation applied.
* :func:`read_mask` returns ``uint8`` H×W class indices; binary masks become {0, 1}.

Every failure caused by the file is a :class:`~pixelwise.errors.PixelwiseError` whose one line names the
file and says what to do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pixelwise.errors import PixelwiseError
from pixelwise.fileio import first_line

#: Largest image accepted, in pixels (width × height). Pillow's own default; anything larger is treated as
#: a decompression bomb and refused *before* decoding, so a tiny file cannot exhaust memory.
MAX_IMAGE_PIXELS = 89_478_485

#: File extensions read as images or masks (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"})
#: Lossy formats: a mask stored in one of these is usually not exactly binary any more.
LOSSY_EXTENSIONS = frozenset({".jpg", ".jpeg", ".webp"})

#: Grey masks whose values all lie below this are read as class indices (0, 1, 2, ...), not as 0/255.
MAX_INDEXED_VALUE = 64
#: A grey mask is "near-binary" (JPEG-compressed 0/255) when at most this fraction of its pixels lie
#: farther than :data:`SNAP_TOLERANCE` from both 0 and 255. Such masks are thresholded at 128.
NEAR_BINARY_MAX_FRACTION = 0.05
SNAP_TOLERANCE = 48
#: RGB masks whose channels differ by at most this on 99 % of pixels are read as greyscale (JPEG chroma noise).
GREY_CHANNEL_TOLERANCE = 24


class MaskWarning(UserWarning):
    """A mask was readable but had to be repaired (e.g. near-binary values snapped to 0/1)."""


def is_image_file(path: str | Path) -> bool:
    """True when the file extension is one pixelwise reads as an image or mask."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class ImageTooLarge(PixelwiseError):
    """The image's header declares more pixels than allowed; refused before any pixel is decoded."""

    def __init__(self, message: str, width: int | None = None, height: int | None = None, limit: int = 0):
        super().__init__(message)
        self.width, self.height, self.limit = width, height, limit


def _open(path: str | Path) -> Image.Image:
    """Open ``path`` with Pillow and fully decode it, turning every failure into a PixelwiseError.

    The pixel count is checked from the header before decoding (decompression-bomb guard).
    """
    path = Path(path)
    if not path.exists():
        raise PixelwiseError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise PixelwiseError(f"{path}: is a folder, not an image file")
    if path.stat().st_size == 0:
        raise PixelwiseError(f"{path}: zero-byte file; re-download or remove it")
    return open_image(path, str(path))


def open_image(source, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file or binary stream with Pillow and decode it, EXIF orientation applied.

    Pillow's ``Image.open`` reads only the header: the pixel count is checked against ``max_pixels``
    there, before anything is decoded, so a small file cannot exhaust memory.

    Args:
        source: a path or a binary file object (e.g. ``io.BytesIO`` of an upload).
        name: how the messages name the image (a path, ``upload``...).
        max_pixels: largest accepted width × height.

    Raises:
        ImageTooLarge: width × height above ``max_pixels`` (or Pillow's own bomb limit).
        PixelwiseError: not an image Pillow reads, truncated or undecodable data.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; we decide ourselves below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError:
        raise ImageTooLarge(
            f"{name}: image is too large (decompression-bomb guard, limit {max_pixels:,} pixels); "
            "downscale it or remove it",
            limit=max_pixels,
        ) from None
    except Exception as err:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        raise PixelwiseError(f"{name}: not a readable image ({_reason(err)}); re-export or remove it") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(
            f"{name}: image is {width}×{height} = {width * height:,} pixels, above the decompression-bomb limit "
            f"of {max_pixels:,}; downscale it or remove it",
            width,
            height,
            max_pixels,
        )
    if width == 0 or height == 0:
        raise PixelwiseError(f"{name}: image has zero width or height; re-export or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            # Orientation is part of the pixels the user sees; phone and camera JPEGs carry it in EXIF.
            image = ImageOps.exif_transpose(image)
    except Exception as err:
        reason = _reason(err)
        if "truncated" in reason.lower() or isinstance(err, (EOFError,)):
            detail = "" if reason.lower().startswith("image file is truncated") else f" ({reason})"
            raise PixelwiseError(f"{name}: image file is truncated{detail}; re-download or remove it") from None
        raise PixelwiseError(f"{name}: image cannot be decoded ({reason}); re-export or remove it") from None
    return image


def _reason(err: BaseException) -> str:
    return first_line(err)[:160]


def _to_uint8_grey(array: np.ndarray) -> np.ndarray:
    """Scale a 16/32-bit integer or float single-channel array to uint8 0..255 (full type range)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        finite = np.nan_to_num(array.astype(np.float64))
        if finite.max(initial=0.0) <= 1.0 and finite.min(initial=0.0) >= 0.0:
            finite = finite * 255.0
        return np.clip(np.rint(finite), 0, 255).astype(np.uint8)
    # 16-bit images use the full 0..65535 range; 32-bit "I" images from 16-bit PNG/TIFF do too.
    top = 65535 if array.max(initial=0) > 255 or array.dtype in (np.uint16, np.dtype(">u2")) else 255
    return np.clip(np.rint(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB.

    Args:
        path: image file (PNG, JPEG, BMP, TIFF, ...).

    Returns:
        ``uint8`` array H×W×3, values 0..255, RGB, EXIF orientation applied. Greyscale and 1-bit images are
        replicated to three channels, palette images expanded, alpha dropped, 16-bit scaled from 0..65535.

    Raises:
        PixelwiseError: missing, zero-byte, unreadable, truncated or too large (decompression bomb) file.
    """
    return image_to_rgb(_open(path), path)


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The bytes of an image file (an upload) as RGB, exactly as :func:`read_image` reads the same file.

    Returns:
        ``uint8`` H×W×3 RGB, EXIF orientation applied.

    Raises:
        ImageTooLarge: the header declares more than ``max_pixels`` pixels (nothing decoded).
        PixelwiseError: empty, not an image, truncated or undecodable data.
    """
    import io

    if not data:
        raise PixelwiseError(f"{name}: no data (zero bytes); send the image file's bytes")
    return image_to_rgb(open_image(io.BytesIO(data), name, max_pixels), name)


def image_to_rgb(image: Image.Image, name: str | Path = "image") -> np.ndarray:
    """A decoded Pillow image as ``uint8`` H×W×3 RGB (the conversions :func:`read_image` documents)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = _to_uint8_grey(np.asarray(image))
        return _owned(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "RGB":
        array = np.asarray(image)
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA", "P", "1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        array = np.asarray(image.convert("RGBA" if mode == "P" else "RGB"))[:, :, :3]
    else:
        try:
            array = np.asarray(image.convert("RGB"))
        except Exception as err:
            raise PixelwiseError(
                f"{name}: unsupported image mode {mode} ({_reason(err)}); save it as RGB PNG"
            ) from None
    return _owned(array)


def _owned(array: np.ndarray) -> np.ndarray:
    """A contiguous, writable uint8 array (``np.asarray`` of a Pillow image is read-only)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return array if array.flags.writeable else array.copy()


def decode_mask(
    path: str | Path, colors: dict[tuple[int, int, int], int] | None = None, void: tuple[int, ...] = ()
) -> tuple[np.ndarray, list[str]]:
    """Read a mask as class indices and report what had to be repaired.

    Same as :func:`read_mask` but returns the repair notes instead of emitting warnings, so a checker can
    attach them to the file. ``void``: values kept as they are (``--ignore-index``, e.g. VOC's 255 border),
    whatever the other values are.

    Returns:
        ``(mask, notes)``: ``uint8`` H×W class indices and a list of one-line notes (empty when the mask was
        clean).
    """
    mask, notes = _decode_mask(Path(path), colors, tuple(void))
    return _owned(mask), notes


def _decode_mask(path: Path, colors, void: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    image = _open(path)
    mode = image.mode
    notes: list[str] = []
    if mode == "1":
        return np.asarray(image, dtype=np.uint8), notes
    if mode == "P" and colors is None:
        # Palette PNGs/BMPs (ISIC, VOC-style): the palette *indices* are the classes.
        indices = np.asarray(image, dtype=np.uint8)
        return _grey_to_classes(path, indices, notes, lossy=False, palette=True, void=void), notes
    if mode in ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        rgb = np.asarray(image.convert("RGB"))
        return _rgb_to_classes(path, rgb, colors, notes), notes
    if mode in ("LA", "La"):
        image = image.convert("L")
    array = np.asarray(image)
    if array.ndim != 2:
        raise PixelwiseError(f"{path}: mask has unsupported mode {mode}; save it as a greyscale PNG with values 0/1")
    if colors is not None:
        grey = _to_uint8_grey(array) if array.dtype != np.uint8 else array
        return _rgb_to_classes(path, np.repeat(grey[:, :, None], 3, axis=2), colors, notes), notes
    if array.dtype != np.uint8:
        values = np.unique(array)
        if values.max(initial=0) < 256 and values.min(initial=0) >= 0 and array.dtype.kind in "iu":
            array = array.astype(np.uint8)  # 16-bit container holding small class indices
        elif array.dtype.kind in "iu" and set(values.tolist()) <= {0, 65535}:
            return (array > 0).astype(np.uint8), notes
        else:
            array = _to_uint8_grey(array)
    return _grey_to_classes(path, array, notes, lossy=path.suffix.lower() in LOSSY_EXTENSIONS, void=void), notes


def read_mask(
    path: str | Path, colors: dict[tuple[int, int, int], int] | None = None, void: tuple[int, ...] = ()
) -> np.ndarray:
    """Read a segmentation mask as class indices.

    Args:
        path: mask file.
        colors: optional colour → class map for RGB (or grey-level) masks, e.g. ``{(0, 0, 0): 0, (255, 0, 0): 1}``.
        void: values kept as they are whatever the other values are (ignored pixels, e.g. 255).

    Returns:
        ``uint8`` array H×W of class indices. Greyscale 0/255 → {0, 1}; 0/1 (1-bit BMP, palette indices) kept;
        small indices (< 64) kept as classes; RGB masks mapped through ``colors`` (without a map, a grey RGB
        mask is read as greyscale and black + one colour as binary). Near-binary masks (JPEG-compressed) are
        thresholded with a :class:`MaskWarning`.

    Raises:
        PixelwiseError: unreadable file, truly grey (non-binary, non-indexed) mask, unknown colours.
    """
    mask, notes = decode_mask(path, colors, void)
    for note in notes:
        warnings.warn(f"{path}: {note}", MaskWarning, stacklevel=2)
    return mask


def _grey_to_classes(
    path: Path, array: np.ndarray, notes: list[str], lossy: bool, palette: bool = False, void: tuple[int, ...] = ()
) -> np.ndarray:
    """Map a uint8 single-channel mask to class indices (see :func:`read_mask` for the rules)."""
    values = np.unique(array)
    if void and np.isin(values, void).any():
        rest = values[~np.isin(values, void)]
        kept = np.isin(array, void)
        if rest.size == 0 or (int(rest[-1]) < MAX_INDEXED_VALUE and not lossy):
            return array.astype(np.uint8, copy=False)
        if set(rest.tolist()) <= {0, 255}:
            return np.where(kept, array, array > 127).astype(np.uint8)
    top = int(values[-1])
    if top <= 1:
        return array.astype(np.uint8, copy=False)
    if values.tolist() in ([0, 255], [255]):
        return (array > 127).astype(np.uint8)
    if top < MAX_INDEXED_VALUE and not lossy:
        return array.astype(np.uint8, copy=False)  # indexed multi-class mask: values are the classes
    shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if len(values) > 6 else "")
    if not lossy and len(values) <= 8:
        # A few deliberate levels in a lossless file (e.g. 0/1/255 with 255 = "ignore", or grey-coded classes):
        # snapping would silently merge classes, so ask for an explicit map instead.
        raise PixelwiseError(
            f"{path}: mask has values {shown}, neither binary 0/255 nor class indices below {MAX_INDEXED_VALUE}; "
            "re-save it with class indices 0..N-1 or declare a colour map (e.g. --colors '0,0,0=0;128,128,128=1')"
        )
    if palette:
        raise PixelwiseError(
            f"{path}: palette mask uses indices up to {top}; expected class indices below {MAX_INDEXED_VALUE} "
            "(pass a colour map for this dataset)"
        )
    far = (array > SNAP_TOLERANCE) & (array < 255 - SNAP_TOLERANCE)
    far_fraction = float(far.mean())
    if far_fraction <= NEAR_BINARY_MAX_FRACTION and top >= 255 - SNAP_TOLERANCE:
        snapped = int(((array > 0) & (array < 255)).sum())
        notes.append(
            f"mask is not exactly binary ({len(values)} grey levels, likely JPEG-compressed); "
            f"thresholded at 128, {snapped} pixels snapped; save masks as PNG to avoid this"
        )
        return (array >= 128).astype(np.uint8)
    raise PixelwiseError(
        f"{path}: mask is grey, not binary or indexed ({len(values)} values: {shown}; "
        f"{far_fraction:.0%} of pixels are mid-grey); save it with values 0/255 or class indices 0..N-1"
    )


def _rgb_to_classes(
    path: Path, rgb: np.ndarray, colors: dict[tuple[int, int, int], int] | None, notes: list[str]
) -> np.ndarray:
    """Map an H×W×3 uint8 mask to class indices, through ``colors`` or by recognising grey/binary masks."""
    if colors is None:
        channels = rgb.astype(np.int16)
        spread = np.abs(channels - channels[:, :, :1]).max(axis=2)
        if int(spread.max()) == 0 or float((spread <= GREY_CHANNEL_TOLERANCE).mean()) >= 0.99:
            grey = np.rint(channels.mean(axis=2)).astype(np.uint8)
            lossy = path.suffix.lower() in LOSSY_EXTENSIONS or int(spread.max()) > 0
            return _grey_to_classes(path, grey, notes, lossy=lossy)
        unique = _unpack_rgb(np.unique(_pack_rgb(rgb)))
        if len(unique) == 2 and not unique[0].any():
            return rgb.reshape(-1, 3).any(axis=1).reshape(rgb.shape[:2]).astype(np.uint8)
        shown = ", ".join(str(tuple(int(c) for c in u)) for u in unique[:4]) + (", ..." if len(unique) > 4 else "")
        raise PixelwiseError(
            f"{path}: colour mask with {len(unique)} colours ({shown}) and no colour→class map; "
            "declare the map (e.g. --colors '0,0,0=0;255,0,0=1')"
        )
    table = np.array(list(colors.keys()), dtype=np.int32).reshape(-1, 3)
    classes = np.array(list(colors.values()), dtype=np.uint8)
    codes, inverse = np.unique(_pack_rgb(rgb), return_inverse=True)
    unique = _unpack_rgb(codes).astype(np.int32)
    distance = ((unique[:, None, :] - table[None, :, :]) ** 2).sum(axis=2)
    nearest = distance.argmin(axis=1)
    exact = distance[np.arange(len(unique)), nearest] == 0
    close = distance[np.arange(len(unique)), nearest] <= 3 * SNAP_TOLERANCE**2
    counts = np.bincount(inverse.ravel(), minlength=len(unique))
    if not close.all():
        unknown = unique[~close]
        shown = ", ".join(str(tuple(int(c) for c in u)) for u in unknown[:4])
        raise PixelwiseError(
            f"{path}: mask has {len(unknown)} colours not in the colour map ({shown}); add them to the map"
        )
    if not exact.all():
        notes.append(
            f"{int(counts[~exact].sum())} pixels had colours near but not equal to the colour map; "
            "snapped to the nearest colour (save masks as PNG to avoid this)"
        )
    return classes[nearest][inverse.ravel()].reshape(rgb.shape[:2])


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 → flat int32 codes ``r·65536 + g·256 + b`` (1-D ``np.unique`` is much faster than rows)."""
    flat = rgb.reshape(-1, 3).astype(np.int32)
    return (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]


def _unpack_rgb(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_pack_rgb`: K codes → K×3 uint8 colours."""
    return np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=1).astype(np.uint8)


def read_pair(
    image_path: str | Path,
    mask_path: str | Path | None,
    colors: dict[tuple[int, int, int], int] | None = None,
    void: tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read an image and its mask, making the mask the image's size when only the scale differs.

    Returns:
        ``(image, mask, notes)``: image ``uint8`` H×W×3, mask ``uint8`` H×W (or None without mask path),
        notes: one-line repairs (mask snapped, mask resized with nearest neighbour).

    Raises:
        PixelwiseError: unreadable files, or image and mask whose aspect ratios differ by more than 1 %.
    """
    image = read_image(image_path)
    if mask_path is None:
        return image, None, []
    mask, notes = decode_mask(mask_path, colors, void)
    mask, note = fit_mask_to_image(mask, image.shape[:2], mask_path, image_path)
    if note:
        notes.append(note)
    return image, mask, notes


def fit_mask_to_image(
    mask: np.ndarray, image_hw: tuple[int, int], mask_path: str | Path, image_path: str | Path
) -> tuple[np.ndarray, str | None]:
    """Make ``mask`` (H×W) the image's size when only the scale differs (aspect within 1 %).

    Returns:
        ``(mask, note)``: the mask (nearest-neighbour resized when needed) and a one-line note, or None when
        the sizes already matched.

    Raises:
        PixelwiseError: aspect ratios differ by more than 1 %.
    """
    (ih, iw), (mh, mw) = image_hw, mask.shape
    if (mh, mw) == (ih, iw):
        return mask, None
    if abs((iw / ih) / (mw / mh) - 1.0) > 0.01:
        raise PixelwiseError(
            f"{mask_path}: mask is {mw}×{mh} but image {Path(image_path).name} is {iw}×{ih} "
            "(different aspect ratio); fix the pair or remove it"
        )
    return resize_nearest(mask, ih, iw), f"mask is {mw}×{mh}, image is {iw}×{ih}: mask resized (nearest neighbour)"


#: Grey of the letterbox bands in the network's input (their mask pixels are void: no loss, no metric).
PAD_GREY = 128
#: Mask value of the letterbox bands (:data:`pixelwise.data.classes.IGNORE`).
PAD_MASK = 255


def fit_box(height: int, width: int, size: int, fit: str = "stretch") -> tuple[int, int, int, int]:
    """Where an H×W image lies in the S×S network input: ``(top, left, rows, cols)``.

    ``stretch`` resizes the image to S×S (its aspect is lost); ``pad`` (letterbox) scales its longer side to S
    and pads the shorter one, so shapes keep their proportions.

    ``stretch``: the whole square ``(0, 0, S, S)``. ``pad``: the image scaled by S / max(H, W), centred.
    The one place that decides this: the cache, ``predict`` and ``serve`` place images with it, and
    :func:`pixelwise.masks.labels.resize_probabilities` crops the network's output back with it.
    """
    if fit != "pad" or height == width:
        return 0, 0, size, size
    scale = size / max(height, width)
    rows = min(size, max(1, round(height * scale)))
    cols = min(size, max(1, round(width * scale)))
    return (size - rows) // 2, (size - cols) // 2, rows, cols


def resize_image(image: np.ndarray, size: int, fit: str = "stretch") -> np.ndarray:
    """Bilinear, antialiased resize of an H×W×3 uint8 image to 3×S×S uint8 (channels first).

    The one resize of images for the network: the training-array cache and ``predict`` both call it, so
    a model sees the same pixels at prediction as in training. Pillow's bilinear filter widens with the
    scale factor (antialiasing), like ``F.interpolate(..., antialias=True)`` within 1-2 grey levels; it is
    used because it works on uint8 and runs single-threaded inside the cache's decoding threads, where
    torch's threaded kernel oversubscribes the CPU. ``fit``: ``stretch`` or ``pad``, see :func:`fit_box`
    (``pad`` fills the bands with :data:`PAD_GREY`).
    """
    top, left, rows, cols = fit_box(image.shape[0], image.shape[1], size, fit)
    if image.shape[:2] != (rows, cols):
        image = np.asarray(Image.fromarray(image).resize((cols, rows), Image.BILINEAR))
    if (rows, cols) == (size, size):
        return np.ascontiguousarray(image.transpose(2, 0, 1))
    out = np.full((3, size, size), PAD_GREY, dtype=np.uint8)
    out[:, top : top + rows, left : left + cols] = image.transpose(2, 0, 1)
    return out


def resize_mask(mask: np.ndarray, size: int, fit: str = "stretch") -> np.ndarray:
    """An H×W class-index mask at the network's S×S, placed as :func:`resize_image` places its image
    (nearest neighbour; ``pad`` bands are :data:`PAD_MASK`, void)."""
    top, left, rows, cols = fit_box(mask.shape[0], mask.shape[1], size, fit)
    resized = resize_nearest(mask, rows, cols)
    if (rows, cols) == (size, size):
        return resized
    out = np.full((size, size), PAD_MASK, dtype=np.uint8)
    out[top : top + rows, left : left + cols] = resized
    return out


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(round(H·scale), round(W·scale))``, at least 1 each: an image's size in a tiled run (aspect kept)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_scaled(image: np.ndarray, scale: float) -> np.ndarray:
    """An H×W×3 uint8 image resized by ``scale`` (aspect kept; :func:`scaled_shape`), H'×W'×3 uint8, with the
    bilinear antialiased filter of :func:`resize_image` (the same pixels in training and prediction)."""
    rows, cols = scaled_shape(image.shape[0], image.shape[1], scale)
    if (rows, cols) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((cols, rows), Image.BILINEAR))


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an H×W class-index mask (pixel-centre sampling, no new values)."""
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def parse_colors(text: str) -> dict[tuple[int, int, int], int]:
    """Parse a colour → class map written as ``"0,0,0=0;255,0,0=1"`` (also ``#ff0000=1``).

    Raises:
        PixelwiseError: malformed entries, with the expected format.
    """
    colors: dict[tuple[int, int, int], int] = {}
    for entry in filter(None, (part.strip() for part in text.replace("\n", ";").split(";"))):
        try:
            colour_text, class_text = entry.split("=")
            colour_text = colour_text.strip()
            if colour_text.startswith("#") and len(colour_text) == 7:
                colour = tuple(int(colour_text[i : i + 2], 16) for i in (1, 3, 5))
            else:
                colour = tuple(int(c) for c in colour_text.split(","))
            class_index = int(class_text)
            if len(colour) != 3 or not all(0 <= c <= 255 for c in colour) or not 0 <= class_index <= 255:
                raise ValueError
        except ValueError:
            raise PixelwiseError(
                f"colour map entry {entry!r} is malformed; write entries like '255,0,0=1' separated by ';'"
            ) from None
        colors[colour] = class_index  # type: ignore[index]
    if not colors:
        raise PixelwiseError("colour map is empty; write entries like '0,0,0=0;255,0,0=1'")
    return colors
