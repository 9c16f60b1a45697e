"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader never sees a half-written file, and an interrupted write leaves the old file intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

_HASH_CHUNK = 1 << 20


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


#: What :func:`atomic_write` names its temporary files: ``.<name>.<8 random characters>.tmp<suffix>``.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`atomic_write` (``kill -9``) left in ``folder``.

    Only names of :func:`atomic_write`'s own pattern are touched. Call it where no other process is writing
    into ``folder`` (a run being resumed, a prediction folder being refilled). Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if _TEMPORARY.match(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON (atomically); NaN and infinities become ``null``, so the file is valid JSON."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that :func:`json.dumps` writes as strict JSON.

    Non-finite floats (Python or numpy) become ``None``; numpy scalars and arrays become Python numbers and
    lists; paths become strings; tuples become lists. Raises ``TypeError`` for anything else unknown.
    """
    import numpy as np

    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def file_sha1(path: str | Path) -> str:
    """SHA-1 hex digest of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when the message is empty."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


def encode_png(array) -> bytes:
    """A uint8 array (H×W or H×W×3) as PNG file bytes: the one PNG encoding of every mask and overlay
    pixelwise writes or serves (``save_png``, ``Segmentation.png_bytes``, ``pixelwise serve``)."""
    import io

    import numpy as np
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise TypeError(f"encode_png expects uint8, got {arr.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | Path, array) -> Path:
    """Write a uint8 array (H×W or H×W×3) as PNG (:func:`encode_png`), atomically."""
    return atomic_write_bytes(path, encode_png(array))
