"""Property-based fault injection (Hypothesis): whatever a user types or drops in, pixelwise either accepts it
or answers with a :class:`PixelwiseError` (one line, shown without a traceback) — never another exception.

Each property covers one entry point that reads user input: mask and image decoding, a run's config.json,
label files, ``--merge``, ``--colors``, durations, and CSV data sets.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelwise.config import Recipe, RunConfig, RunRecord, parse_duration
from pixelwise.data.classes import class_map_for, parse_merge, read_label_file
from pixelwise.data.imageio import decode_image, decode_mask, parse_colors
from pixelwise.data.layouts import find_pairs
from pixelwise.errors import PixelwiseError

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def accepted_or_refused(function, *args, **kwargs):
    """Call ``function``; a PixelwiseError is a refusal (returns None), any other exception fails the test."""
    try:
        return function(*args, **kwargs)
    except PixelwiseError as error:
        message = str(error)
        assert message and "\n" not in message.strip(), f"not one line: {message!r}"
        assert "Traceback" not in message
        return None


masks = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda shape: st.sampled_from(["L", "P", "RGB", "I;16", "1", "LA", "RGBA"]).flatmap(
        lambda mode: st.tuples(
            st.just(mode),
            st.lists(st.integers(0, 65535), min_size=shape[0] * shape[1] * 4, max_size=shape[0] * shape[1] * 4),
            st.just(shape),
        )
    )
)


def mask_file(tmp_path, mode: str, values: list[int], shape: tuple[int, int], suffix: str) -> str:
    h, w = shape
    data = np.array(values, dtype=np.int64)
    if mode in ("L", "P", "1"):
        image = Image.fromarray((data[: h * w] % 256).astype(np.uint8).reshape(h, w), "L")
        image = (
            image.convert(mode)
            if mode != "P"
            else Image.fromarray((data[: h * w] % 256).astype(np.uint8).reshape(h, w), "P")
        )
    elif mode == "I;16":
        image = Image.fromarray(data[: h * w].astype(np.uint16).reshape(h, w))
    else:
        channels = len(mode)
        image = Image.fromarray((data[: h * w * channels] % 256).astype(np.uint8).reshape(h, w, channels), mode)
    path = tmp_path / f"mask{suffix}"
    image.save(path)
    return str(path)


@FAST
@given(
    mask=masks,
    suffix=st.sampled_from([".png", ".bmp", ".jpg"]),
    void=st.sampled_from([(), (255,), (11, 12)]),
    colours=st.sampled_from([None, {(0, 0, 0): 0, (255, 255, 255): 1}]),
)
def test_any_mask_decodes_to_class_indices_or_is_refused(tmp_path, mask, suffix, void, colours):
    mode, values, shape = mask
    if (suffix == ".jpg" and mode in ("I;16", "LA", "RGBA", "P", "1")) or (suffix == ".bmp" and mode in ("I;16", "LA")):
        suffix = ".png"  # formats Pillow cannot write in that mode
    path = mask_file(tmp_path, mode, values, shape, suffix)
    result = accepted_or_refused(decode_mask, path, colours, void)
    if result is not None:
        decoded, notes = result
        assert decoded.dtype == np.uint8 and decoded.shape == shape
        assert all(isinstance(n, str) for n in notes)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buffer, "PNG")
    return buffer.getvalue()


@FAST
@given(cuts=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6), truncate=st.integers(0, 200))
def test_damaged_image_bytes_decode_or_are_refused(cuts, truncate):
    data = bytearray(png_bytes())
    for position, value in cuts:
        data[position % len(data)] = value
    data = bytes(data[: max(1, len(data) - truncate)])
    result = accepted_or_refused(decode_image, data, "upload.png")
    if result is not None:
        assert result.dtype == np.uint8 and result.ndim == 3 and result.shape[2] == 3


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
CONFIG_KEYS = sorted({*Recipe.__dataclass_fields__, *RunRecord.__dataclass_fields__, "extra"})


@FAST
@given(values=st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=6), nested=st.booleans())
def test_any_config_json_loads_validates_or_is_refused(values, nested):
    """Both forms of config.json: recipe + record, and the flat object of run folders written before."""
    if nested:
        values = {
            "recipe": {k: v for k, v in values.items() if k in Recipe.__dataclass_fields__},
            "record": {k: v for k, v in values.items() if k in RunRecord.__dataclass_fields__} or None,
        }
    config = accepted_or_refused(RunConfig.from_dict, values)
    if config is None:
        return
    accepted_or_refused(config.recipe.validate)
    accepted_or_refused(config.trained)
    if config.record is not None:
        accepted_or_refused(config.class_map)


@FAST
@given(
    text=st.text(alphabet=st.sampled_from(list("0123456789 #abcfvoidgnre\n\t,=;*-")), max_size=80),
    suffix=st.sampled_from([".txt", ".json"]),
    merge=st.none() | st.text(alphabet=st.sampled_from(list("abc0129=,;*# \n")), max_size=30),
)
def test_any_label_file_and_merge_build_a_class_map_or_are_refused(tmp_path, text, suffix, merge):
    path = tmp_path / f"labels{suffix}"
    path.write_text(text)
    accepted_or_refused(read_label_file, path)
    result = accepted_or_refused(class_map_for, path, merge)
    if result is not None and result[0] is not None:
        class_map = result[0]
        assert 2 <= class_map.num_classes <= 256 and len(class_map.table) == 256
        mapped = class_map.apply(np.arange(256, dtype=np.uint8))
        assert mapped.dtype == np.uint8 and ((mapped < class_map.num_classes) | (mapped == 255)).all()
    if merge is not None:
        accepted_or_refused(parse_merge, merge)


@FAST
@given(text=st.text(max_size=40))
def test_colour_maps_and_durations_parse_or_are_refused(text):
    colours = accepted_or_refused(parse_colors, text)
    if colours is not None:
        assert all(len(c) == 3 and 0 <= v <= 255 for c, v in colours.items())
    seconds = accepted_or_refused(parse_duration, text)
    if seconds is not None:
        assert seconds >= 0 and not math.isnan(seconds)


@FAST
@given(
    rows=st.lists(
        st.lists(
            st.sampled_from(
                [
                    "a.png",
                    "b.png",
                    "",
                    "missing.png",
                    "../x.png",
                    "a.png,b.png",
                    "label",
                    "image",
                    "mask",
                    "\x00",
                    "é.png",
                ]
            ),
            min_size=0,
            max_size=4,
        ),
        max_size=6,
    ),
    header=st.sampled_from(["image,mask", "image,mask,label", "mask,image", "img,msk", ""]),
)
def test_any_csv_data_set_lists_pairs_or_is_refused(tmp_path, rows, header):
    root = tmp_path / "csvset"
    root.mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / name)
    text = header + "\n" + "\n".join(",".join(row) for row in rows)
    (root / "pairs.csv").write_text(text, encoding="utf-8")
    index = accepted_or_refused(find_pairs, root / "pairs.csv")
    if index is not None:
        assert all(p.image.exists() for p in index.pairs)
        assert all(problem.message for problem in index.problems)


def test_the_properties_ran_with_hypothesis():
    """Guards against a silently skipped module: Hypothesis must be importable where the suite runs."""
    import hypothesis

    assert int(hypothesis.__version__.split(".")[0]) >= 6
    json.dumps({"ok": True})
    pytest.importorskip("hypothesis")
