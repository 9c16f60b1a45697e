"""Decoded, resized arrays cached on disk, so an image is decoded once per target size, not once per run.

Layout of a cache folder (movable, and safe to delete at any time)::

    <cache>/hashes.json                      path → (size, mtime, ctime, sha1): skips re-hashing unchanged files
    <cache>/arrays/s<SIZE>/<ab>/<key>.npy    uint8 4×S×S: RGB image (3 planes) + mask (1 plane)
    <cache>/arrays/x<SCALE>/<ab>/<key>.npy   uint8 4×H'×W': the same, resized by SCALE (aspect kept; tiled runs)

``key`` is the SHA-1 of the image's and mask's *content* hashes, the target size, the colour map and the
cache format version, so a changed file gets a new entry (the cache is "rebuilt" for that pair only), and
a moved dataset or cache folder still hits. ``hashes.json`` only memoises content hashes by file stat.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from pixelwise import reporting
from pixelwise.data.imageio import read_pair, resize_image, resize_mask, resize_nearest, resize_scaled
from pixelwise.data.layouts import Pair
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import atomic_write, atomic_write_json, file_sha1

if TYPE_CHECKING:  # torch is imported when arrays are built, so `pixelwise data check` starts fast
    import torch

#: Bump when decoding or resizing changes, so old entries are no longer used.
CACHE_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$PIXELWISE_CACHE`` if set, else ``$XDG_CACHE_HOME/pixelwise``, else ``~/.cache/pixelwise``."""
    if os.environ.get("PIXELWISE_CACHE"):
        return Path(os.environ["PIXELWISE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pixelwise"


class HashMemo:
    """Content hashes remembered by file stat, stored in ``<cache>/hashes.json``.

    A file whose size, mtime and ctime are unchanged is not read again; any change (even ``touch``) re-hashes
    it, and since entries are keyed by content an unchanged content still hits the array cache.
    """

    def __init__(self, cache_dir: Path):
        self.path = cache_dir / "hashes.json"
        self._lock = threading.Lock()
        self._dirty = False
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = {}
        # A damaged or foreign file (wrong shape) only costs re-hashing: keep the entries that look right.
        self._entries: dict[str, list] = {
            name: entry
            for name, entry in (entries.items() if isinstance(entries, dict) else ())
            if isinstance(entry, list)
            and len(entry) == 4
            and isinstance(entry[3], str)
            and all(isinstance(v, int) for v in entry[:3])
        }

    def digest(self, path: Path) -> str:
        try:
            stat = path.stat()
        except OSError:
            raise PixelwiseError(f"{path}: file not found; the dataset changed since it was listed") from None
        name = str(path.resolve())
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        entry = self._entries.get(name)
        if entry is not None and entry[:3] == signature:
            return entry[3]
        value = file_sha1(path)
        with self._lock:
            self._entries[name] = [*signature, value]
            self._dirty = True
        return value

    def save(self) -> None:
        if self._dirty:
            try:
                atomic_write_json(self.path, self._entries)
            except OSError:
                pass  # a read-only cache still works, it only re-hashes next time
            self._dirty = False


def pair_key(
    image_hash: str,
    mask_hash: str,
    size: int,
    colors: dict | None = None,
    void: tuple = (),
    scale: float | None = None,
) -> str:
    """Cache key of one pair at one target size (hex SHA-1); ``size`` 0 keys the size-free check record;
    ``scale``: the pair resized by this factor, aspect kept (tiled runs) instead of to a square."""
    colour_text = json.dumps(sorted((list(k), v) for k, v in colors.items())) if colors else ""
    text = f"v{CACHE_FORMAT_VERSION}|{image_hash}|{mask_hash}|{size}|{colour_text}"
    if void:  # only then, so the keys of existing caches stay valid
        text += f"|void{sorted(void)}"
    if scale is not None:
        text += f"|scale{scale!r}"
    return hashlib.sha1(text.encode()).hexdigest()


#: Keys of a check record (written by pixelwise.data.check).
RECORD_KEYS = frozenset({"image", "mask", "image_error", "mask_error", "notes", "resized", "class_pixels", "usable"})


class PairCache:
    """One cache folder: content hashes, resized arrays per size, and per-pair check records.

    Check records (``<cache>/checks/<ab>/<key>.json``) hold what :func:`pixelwise.data.check.check_dataset`
    learns by decoding a pair (sizes, class pixel counts, repair notes, errors), keyed by content, so an
    unchanged dataset is re-checked without decoding.
    """

    def __init__(
        self, cache_dir: Path | None = None, colors: dict | None = None, void: tuple = (), fit: str = "stretch"
    ):
        self.root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.colors = colors
        self.void = tuple(void)
        self.fit = fit  # arrays of "pad" runs (letterboxed) live beside the stretched ones
        self.writable = _prepare(self.root)
        self.memo = HashMemo(self.root)

    def content(self, pair: Pair) -> tuple[str, str]:
        """``(image hash, mask hash)``; the mask hash is "" for a pair without mask."""
        if getattr(pair, "instances", None):  # instance data read in place: its own digest and target encoding
            return self.memo.digest(pair.image), instance_digest(self.memo, pair)
        return self.memo.digest(pair.image), (self.memo.digest(pair.mask) if pair.mask is not None else "")

    def array_path(self, content: tuple[str, str], size: int) -> Path:
        key = pair_key(*content, size, self.colors, self.void)
        folder = f"s{size}" if self.fit == "stretch" else f"s{size}-{self.fit}"
        return self.root / "arrays" / folder / key[:2] / f"{key}.npy"

    def scaled_path(self, content: tuple[str, str], scale: float) -> Path:
        """Where the pair resized by ``scale`` (aspect kept) is cached: ``arrays/x<scale>/``."""
        key = pair_key(*content, 0, self.colors, self.void, scale=scale)
        return self.root / "arrays" / f"x{scale:.4g}" / key[:2] / f"{key}.npy"

    def read_scaled(self, content: tuple[str, str], scale: float) -> np.ndarray | None:
        """The cached uint8 4×H'×W' entry at ``scale`` (its shape is the image's), or None (absent, damaged)."""
        try:
            packed = np.load(self.scaled_path(content, scale), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return packed if packed.dtype == np.uint8 and packed.ndim == 3 and packed.shape[0] == 4 else None

    def write_scaled(self, content: tuple[str, str], scale: float, packed: np.ndarray) -> None:
        self._write(self.scaled_path(content, scale), lambda p: np.save(p, packed))

    def record_path(self, content: tuple[str, str]) -> Path:
        key = pair_key(*content, 0, self.colors, self.void)
        return self.root / "checks" / key[:2] / f"{key}.json"

    def read_array(self, content: tuple[str, str], out: np.ndarray) -> bool:
        """Fill ``out`` (uint8 4×S×S) from the cache; False when the entry is absent or damaged."""
        return _read_entry(self.array_path(content, out.shape[-1]), out)

    def write_array(self, content: tuple[str, str], packed: np.ndarray) -> None:
        self._write(self.array_path(content, packed.shape[-1]), lambda p: np.save(p, packed))

    def read_record(self, content: tuple[str, str]) -> dict | None:
        """The pair's check record, or None when absent or not of the shape the checker writes."""
        try:
            record = json.loads(self.record_path(content).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and RECORD_KEYS <= record.keys() else None

    def write_record(self, content: tuple[str, str], record: dict) -> None:
        text = json.dumps(record)
        self._write(self.record_path(content), lambda p: p.write_text(text, encoding="utf-8"))

    def _write(self, path: Path, write) -> None:
        if not self.writable:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, write)
        except OSError:
            pass  # full or read-only disk: keep going uncached

    def save(self) -> None:
        self.memo.save()


def pack_resized(image: np.ndarray, mask: np.ndarray, size: int, fit: str = "stretch") -> np.ndarray:
    """Resize an image (H×W×3) and its mask (H×W) to ``size``: uint8 4×S×S (planes 0-2 RGB, plane 3 mask);
    ``fit``: ``stretch`` or ``pad`` (:func:`~pixelwise.data.imageio.fit_box`)."""
    packed = np.empty((4, size, size), dtype=np.uint8)
    packed[:3] = resize_image(image, size, fit)
    packed[3] = resize_mask(mask, size, fit)
    return packed


def decode_resized(
    pair: Pair, size: int, colors: dict | None = None, void: tuple = (), fit: str = "stretch"
) -> np.ndarray:
    """Decode a pair and resize it: uint8 4×S×S (planes 0-2 RGB image, plane 3 mask classes)."""
    if pair.mask is None:
        raise PixelwiseError(f"{pair.image}: image without mask cannot be used for training; add its mask")
    if getattr(pair, "instances", None):  # decoding hook: instance data → the instance run's target classes
        from pixelwise.data.instances_io import read_pair_instances
        from pixelwise.masks.instance_decode import pack_instances

        sample = read_pair_instances(pair, colors, void)
        return pack_instances(sample.image, sample.labels, sample.classes, sample.void, size, fit)
    image, mask, _ = read_pair(pair.image, pair.mask, colors, void)
    return pack_resized(image, mask, size, fit)


def read_training_mask(pair: Pair, colors: dict | None = None, void: tuple = ()) -> np.ndarray:
    """uint8 H×W mask values of a pair at its own resolution as training reads them: the mask file's values, or
    for instance data (``pair.instances``) its target classes encoded at that resolution."""
    if getattr(pair, "instances", None):
        from pixelwise.data.instances_io import read_pair_instances
        from pixelwise.masks.instance_decode import encode_targets

        sample = read_pair_instances(pair, colors, void, with_image=False)
        return encode_targets(sample.labels, sample.classes, sample.void)
    from pixelwise.data.imageio import read_mask

    return read_mask(pair.mask, colors, void)


def instance_digest(memo: HashMemo, pair: Pair) -> str:
    """The content hash of an instance pair's mask source (a DSB ``masks/`` folder: every file's name and hash;
    VOC: the object and class PNGs) with how it is read and encoded, so a new encoding gets new entries."""
    from pixelwise.masks.instance_decode import ENCODING_VERSION

    source = Path(pair.mask)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        parts = [f"{p.name}:{memo.digest(p)}" for p in files]
    else:
        parts = [memo.digest(source)]
        if pair.instances == "voc":
            parts.append(memo.digest(source.parent.parent / "SegmentationClass" / source.name))
    text = "|".join(parts) + f"|instances-{pair.instances}-v{ENCODING_VERSION}"
    return hashlib.sha1(text.encode()).hexdigest()


def load_arrays(
    pairs: Sequence[Pair],
    size: int,
    cache_dir: Path | None = None,
    progress: bool = True,
    colors: dict[tuple[int, int, int], int] | None = None,
    workers: int | None = None,
    void: tuple[int, ...] = (),
    fit: str = "stretch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks of ``pairs`` at ``size``×``size``, decoded once and then read from the cache.

    Args:
        pairs: pairs with masks.
        size: target side S in pixels (images are resized to a square).
        cache_dir: cache folder; None → :func:`default_cache_dir`.
        progress: a progress bar while decoding files that are not cached yet (when the CLI shows bars).
        colors: colour → class map for RGB masks (part of the cache key).
        void: mask values kept as they are (ignored pixels; part of the cache key).
        workers: decoding threads (default: up to 4, bounded by the CPU count).
        fit: ``stretch`` or ``pad`` (letterbox; the bands' mask pixels are void), see
            :func:`~pixelwise.data.imageio.fit_box`.

    Returns:
        ``(images, masks)``: ``uint8`` N×3×S×S (bilinear, antialiased) and ``uint8`` N×S×S class indices
        (nearest neighbour), in the order of ``pairs``.

    Raises:
        PixelwiseError: a file cannot be read, a pair has no mask, or image and mask aspect ratios differ.
    """
    if size < 8:
        raise PixelwiseError(f"image size {size}: too small; use at least 8 pixels")
    pairs = list(pairs)
    for pair in pairs:
        if pair.mask is None:
            raise PixelwiseError(f"{pair.image}: image without mask cannot be used for training; add its mask")
    cache = PairCache(cache_dir, colors, void, fit)
    workers = workers or default_workers()
    # Filled as numpy arrays (plain memcpy), wrapped as tensors at the end without a copy.
    images = np.empty((len(pairs), 3, size, size), dtype=np.uint8)
    masks = np.empty((len(pairs), size, size), dtype=np.uint8)
    with ThreadPoolExecutor(workers) as pool:
        contents = list(pool.map(cache.content, pairs))
    missing: list[int] = []
    buffer = np.empty((4, size, size), dtype=np.uint8)
    for index, content in enumerate(contents):
        if not cache.read_array(content, buffer):
            missing.append(index)
            continue
        images[index] = buffer[:3]
        masks[index] = buffer[3]

    def decode(index: int) -> None:
        packed = decode_resized(pairs[index], size, colors, void, fit)
        images[index] = packed[:3]
        masks[index] = packed[3]
        cache.write_array(contents[index], packed)

    try:
        if missing:
            run_parallel(decode, missing, workers, progress, f"decoding {len(missing)} pairs at {size}px")
    finally:
        cache.save()
    import torch

    return torch.from_numpy(images), torch.from_numpy(masks)


def decode_scaled(pair: Pair, scale: float, colors: dict | None = None, void: tuple = ()) -> np.ndarray:
    """Decode a pair and resize it by ``scale`` (aspect kept): uint8 4×H'×W' (planes 0-2 RGB, plane 3 mask
    values), H'×W' = :func:`~pixelwise.data.imageio.scaled_shape` of the image's size."""
    if pair.mask is None:
        raise PixelwiseError(f"{pair.image}: image without mask cannot be used for training; add its mask")
    if getattr(pair, "instances", None):  # decoding hook: instance data → target classes at the scaled size
        from pixelwise.data.instances_io import read_pair_instances
        from pixelwise.masks.instance_decode import pack_instances_scaled

        sample = read_pair_instances(pair, colors, void)
        return pack_instances_scaled(sample.image, sample.labels, sample.classes, sample.void, scale)
    image, mask, _ = read_pair(pair.image, pair.mask, colors, void)
    scaled = resize_scaled(image, scale)
    packed = np.empty((4, *scaled.shape[:2]), dtype=np.uint8)
    packed[:3] = scaled.transpose(2, 0, 1)
    packed[3] = resize_nearest(mask, *scaled.shape[:2])
    return packed


def load_scaled_arrays(
    pairs: Sequence[Pair],
    scale: float,
    cache_dir: Path | None = None,
    progress: bool = True,
    colors: dict[tuple[int, int, int], int] | None = None,
    workers: int | None = None,
    void: tuple[int, ...] = (),
) -> list[np.ndarray]:
    """Images and masks of ``pairs`` resized by ``scale`` (aspect kept), decoded once, then read from the cache
    (``arrays/x<scale>/``, keyed by content and scale): the arrays of tiled runs.

    Returns:
        one ``uint8`` 4×H'×W' array per pair, in order: planes 0-2 the RGB image (bilinear, antialiased, as
        :func:`load_arrays`), plane 3 the mask values (nearest); each pair at its own scaled size.

    Raises:
        PixelwiseError: a file cannot be read, a pair has no mask, or image and mask aspect ratios differ.
    """
    pairs = list(pairs)
    for pair in pairs:
        if pair.mask is None:
            raise PixelwiseError(f"{pair.image}: image without mask cannot be used for training; add its mask")
    cache = PairCache(cache_dir, colors, void)
    workers = workers or default_workers()
    with ThreadPoolExecutor(workers) as pool:
        contents = list(pool.map(cache.content, pairs))
    arrays: list[np.ndarray | None] = [cache.read_scaled(content, scale) for content in contents]
    missing = [index for index, packed in enumerate(arrays) if packed is None]

    def decode(index: int) -> None:
        packed = decode_scaled(pairs[index], scale, colors, void)
        arrays[index] = packed
        cache.write_scaled(contents[index], scale, packed)

    try:
        if missing:
            run_parallel(decode, missing, workers, progress, f"decoding {len(missing)} pairs at scale {scale:.3g}")
    finally:
        cache.save()
    return arrays


def default_workers() -> int:
    """Decoding threads: Pillow and torch release the GIL while decoding/resizing, so threads scale."""
    return max(1, min(4, os.cpu_count() or 1))


def _prepare(cache_dir: Path) -> bool:
    """Create the cache folder; False (cache not written, still read) when that is not possible."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return os.access(cache_dir, os.W_OK)
    except OSError:
        return False


def _read_entry(path: Path, out: np.ndarray) -> bool:
    """Read a cached 4×S×S uint8 ``.npy`` into ``out``; False when absent or damaged (it is then rebuilt).

    The data of an ``.npy`` file are its last ``out.nbytes`` bytes; reading them straight into ``out`` is
    several times faster than ``np.load``, which parses the header text of every file.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(10)
            total = os.fstat(handle.fileno()).st_size
            if header[:6] != b"\x93NUMPY" or total - out.nbytes < 10:
                return False
            descriptor = handle.read(total - out.nbytes - 10).replace(b" ", b"")
            expected = (b"'descr':'|u1'", b"'fortran_order':False", f"'shape':{out.shape}".replace(" ", "").encode())
            if not all(part in descriptor for part in expected):
                return False
            return handle.readinto(memoryview(out).cast("B")) == out.nbytes
    except OSError:
        return False


def run_parallel(function, items: list, workers: int, progress: bool, description: str) -> list:
    """``[function(item) for item in items]`` on a thread pool, with a progress bar when ``progress``
    (:func:`pixelwise.reporting.progress`: drawn only when the CLI turned bars on).

    The first exception cancels the work not yet started and is re-raised.
    """
    pool = ThreadPoolExecutor(workers)
    try:
        futures = [pool.submit(function, item) for item in items]
        if progress:
            futures = reporting.progress(futures, description, total=len(futures))
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
