"""The classes of a data set: their names and colours, which mask values are ignored, and how mask values
map to the classes a run trains (merging many labels into a few).

A :class:`ClassMap` turns a decoded mask (``uint8`` H×W values as stored in the files) into the class indices
a run trains on, through one 256-entry lookup table:

* value → class index ``0..K-1`` (``K`` = ``len(names)``);
* value → :data:`IGNORE` (void pixels: they count in no loss and no metric);
* value → :data:`UNKNOWN` (not a class and not ignored: the checker names the file and the value).

Where it comes from (:func:`class_map_for`):

* a label file: ``labels.txt`` (lines ``INDEX NAME``, optionally ``INDEX NAME R G B`` or ``INDEX NAME #rrggbb``;
  a class named ``void`` or ``ignore`` marks ignored values) or ``labels.json``
  (``{"classes": [{"index": 0, "name": "background", "color": [0, 0, 0]}, ...], "ignore": [255]}``),
  given with ``--labels FILE`` or found in the data folder;
* ``--ignore-index K`` (repeatable): mask values to ignore;
* ``--merge "upper=blouse,coat,shirt;lower=pants,jeans"`` (or a file with one ``NAME=LABEL,LABEL`` per line):
  the trained classes are background (class 0) and the groups in the order given; a label named in no group
  joins the background, unless a group lists ``*`` (every label not named elsewhere).

Class 0 is the background of binary and parsing data; metrics that leave out the background leave out class 0.

This module is the one owner of what follows from the classes (like nnU-Net's label manager): whether a run
is binary (:func:`is_binary`), its output channels and activation (:func:`output_channels`, :func:`activate`:
one sigmoid channel for two classes, a softmax over K otherwise), the rule from probabilities to labels
(:func:`labels_from_probabilities`: a threshold for binary runs, the argmax otherwise), the mask file's pixel
values (:func:`png_values`), default names (:meth:`ClassMap.plain`) and every display colour
(:func:`voc_colour`, :data:`TRUTH_RGB`, :data:`PREDICTION_RGB`, :func:`page_colours`). Everything else asks it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelwise.errors import PixelwiseError

#: Internal mask value of ignored (void) pixels, after the class map is applied.
IGNORE = 255
#: Lookup-table entry of a mask value that is neither a class nor ignored.
UNKNOWN = -1
#: Label files looked for in a data set folder, in this order.
LABEL_FILE_NAMES = ("labels.json", "labels.txt")
#: Class names in a labels.txt that mark the value as ignored.
VOID_NAMES = frozenset({"void", "ignore"})


#: Contour colours of overlays and the report: the truth in green, the prediction (and the foreground of a
#: binary run) in red.
TRUTH_RGB = (0, 200, 0)
PREDICTION_RGB = (230, 30, 30)
#: Class colours of the served page for binary runs, whose class map keeps VOC's dark red for class 1: the
#: prediction red first, then colours that stay apart on photos.
PAGE_RGB = (
    PREDICTION_RGB,
    (30, 120, 230),
    (240, 180, 20),
    (40, 170, 80),
    (170, 60, 200),
    (20, 190, 190),
    (240, 110, 170),
    (120, 80, 40),
)


def is_binary(num_classes: int) -> bool:
    """True for two classes (background + foreground): one sigmoid output channel and a threshold."""
    return num_classes == 2


def output_channels(num_classes: int) -> int:
    """The network's output channels: 1 for a binary run (sigmoid), one per class otherwise (softmax)."""
    return 1 if is_binary(num_classes) else num_classes


def is_binary_output(outputs) -> bool:
    """True when a network output (logits or probabilities, N×K×H×W) is a binary run's single channel."""
    return outputs.shape[1] == 1


def activate(logits):
    """Logits N×K×H×W (torch) → float32 probabilities: sigmoid when K = 1 (binary), softmax over K otherwise."""
    import torch

    logits = logits.float()
    return torch.sigmoid(logits) if is_binary_output(logits) else torch.softmax(logits, dim=1)


def labels_from_probabilities(probs, threshold: float = 0.5):
    """Probabilities N×K×H×W (torch) → class indices N×H×W (uint8): ``> threshold`` if K = 1 (binary runs),
    the argmax otherwise (the threshold does not apply)."""
    import torch

    if is_binary_output(probs):
        return (probs[:, 0] > threshold).to(torch.uint8)
    return probs.argmax(dim=1).to(torch.uint8)


def png_values(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices → the pixel values of the mask PNG: 0/255 for binary runs, the indices themselves
    otherwise (uint8 H×W either way; multi-class files add the palette)."""
    return (labels * 255).astype(np.uint8) if is_binary(num_classes) else labels.astype(np.uint8)


def page_colours(class_map: "ClassMap") -> list[tuple[int, int, int]]:
    """The class colours of the served page: a binary run's foreground in :data:`PREDICTION_RGB` (as its
    overlay contour), a multi-class run's own class colours."""
    if class_map.is_binary:
        return [PAGE_RGB[(i - 1) % len(PAGE_RGB)] for i in range(class_map.num_classes)]
    return [tuple(c) for c in class_map.colors]


def default_names(num_classes: int) -> tuple[str, ...]:
    """Class names of a run without a label file: background, foreground (binary) or background, class i."""
    if is_binary(num_classes):
        return ("background", "foreground")
    return ("background",) + tuple(f"class {i}" for i in range(1, num_classes))


def voc_colour(index: int) -> tuple[int, int, int]:
    """Display colour of a class without its own: PASCAL VOC's palette (bits of the index interleaved over
    R, G, B), which most viewers and papers use: class 1 dark red, 2 green, 3 olive, ..."""
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
        r |= ((c >> 0) & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
    return r, g, b


#: Target class of instance runs (``--task instances``) that marks each object's edge and the pixels between
#: touching objects; the classes after it are the objects' interiors (:func:`instance_target_classes`).
BORDER_CLASS = 1
BORDER_NAME = "border"
BORDER_RGB = (255, 255, 255)


def instance_target_classes(object_names: tuple[str, ...], colors: tuple[tuple[int, int, int], ...] = ()) -> "ClassMap":
    """The classes an instance run trains: ``background``, ``border`` (:data:`BORDER_CLASS`), then one interior
    class per object class (``object_names``, e.g. ``("nucleus",)``: 3 classes, a softmax). Mask value 255 is void.

    Args:
        object_names: names of the object classes, in class order (class 1 of the data first).
        colors: their display colours (one RGB each), or empty for the VOC palette of the object classes.
    """
    names = ("background", BORDER_NAME, *object_names)
    given = dict(enumerate(colors, start=1))
    palette = {0: voc_colour(0), 1: BORDER_RGB}
    palette.update({k + 1: given.get(k) or voc_colour(k) for k in range(1, len(object_names) + 1)})
    return _build(names, palette, {v: v for v in range(len(names))}, (IGNORE,))


def is_instance_target(class_map: "ClassMap") -> bool:
    """True when ``class_map`` holds an instance run's targets (background, border, interiors)."""
    return class_map.num_classes >= 3 and class_map.names[BORDER_CLASS] == BORDER_NAME


def object_classes(class_map: "ClassMap") -> tuple[str, ...]:
    """The object class names of an instance run's targets (the interiors), index 0 = object class 1."""
    return class_map.names[BORDER_CLASS + 1 :]


def instance_colour(object_id: int) -> tuple[int, int, int]:
    """Display colour of object ``object_id`` (≥ 1) in instance overlays: hues a golden angle apart, so
    neighbouring ids differ, saturated and bright enough to read on photos and micrographs."""
    import colorsys

    hue = (object_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass(frozen=True)
class ClassMap:
    """Names, display colours and the mask-value lookup table of a run's classes.

    Attributes:
        names: class names; index = class index (0 = background for binary/parsing data).
        colors: RGB display colour per class (overlays, palette PNGs, report).
        table: 256 ints: mask value → class index, :data:`IGNORE`, or :data:`UNKNOWN`.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    table: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def is_binary(self) -> bool:
        return is_binary(self.num_classes)

    @property
    def output_channels(self) -> int:
        return output_channels(self.num_classes)

    @property
    def activation(self) -> str:
        """``sigmoid`` (binary runs, one channel) or ``softmax`` (over the classes)."""
        return "sigmoid" if self.is_binary else "softmax"

    def labelling_rule(self, threshold: float) -> str:
        """How the network's output becomes a mask, in words (the ONNX contract and docs)."""
        if self.is_binary:
            return f"mask = sigmoid(logits[:, 0]) > threshold ({threshold:g})"
        return "mask = argmax(logits, axis=1) (class indices)"

    @property
    def ignored_values(self) -> list[int]:
        return [v for v, c in enumerate(self.table) if c == IGNORE]

    @property
    def is_identity(self) -> bool:
        """True when mask values are the class indices themselves and nothing is ignored."""
        return all(c == v for v, c in enumerate(self.table[: self.num_classes])) and all(
            c == UNKNOWN for c in self.table[self.num_classes :]
        )

    def with_ignored(self, values) -> "ClassMap":
        """The same classes with ``values`` (mask values, e.g. from ``--ignore-index``) ignored as well."""
        table = list(self.table)
        for value in values:
            table[int(value)] = IGNORE
        return ClassMap(self.names, self.colors, tuple(table))

    def unknown_values(self, values) -> list[int]:
        """The mask values among ``values`` that are neither a class nor ignored."""
        return [int(v) for v in values if not 0 <= int(v) < 256 or self.table[int(v)] == UNKNOWN]

    def apply(self, masks):
        """Mask values → class indices (uint8; :data:`IGNORE` for void and unknown values).

        Args:
            masks: ``uint8`` array or tensor of any shape holding mask values as decoded from the files.
        Returns:
            Same type and shape, ``uint8``.
        """
        lut = np.asarray([IGNORE if c == UNKNOWN else c for c in self.table], dtype=np.uint8)
        if isinstance(masks, np.ndarray):
            return lut[masks]
        import torch

        return torch.as_tensor(lut, device=masks.device)[masks.long()]

    def class_pixels(self, value_pixels: list[int]) -> list[int]:
        """Per-value pixel counts (index = mask value) → per-class counts (ignored and unknown values dropped)."""
        counts = [0] * self.num_classes
        for value, count in enumerate(value_pixels):
            target = self.table[value] if value < 256 else UNKNOWN
            if 0 <= target < self.num_classes:
                counts[target] += count
        return counts

    def to_dict(self) -> dict:
        """JSON form saved in ``config.json``: names, colours, ignored values and the non-identity mappings."""
        return {
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "values": {str(v): ("ignore" if c == IGNORE else c) for v, c in enumerate(self.table) if c != UNKNOWN},
        }

    @classmethod
    def from_dict(cls, values: dict, source: str = "config.json") -> "ClassMap":
        try:
            names = tuple(str(n) for n in values["names"])
            colors = tuple(tuple(int(x) for x in c) for c in values["colors"])
            table = [UNKNOWN] * 256
            for value, target in values["values"].items():
                table[int(value)] = IGNORE if target == "ignore" else int(target)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise PixelwiseError(f"{source}: 'classes' is malformed ({err}); restore the file or re-run training")
        if (
            len(colors) != len(names)
            or any(len(c) != 3 for c in colors)
            or not 2 <= len(names) <= 255
            or any(not (c == IGNORE or 0 <= c < len(names) or c == UNKNOWN) for c in table)
        ):
            raise PixelwiseError(
                f"{source}: 'classes' is inconsistent (names, colours and values disagree); "
                f"restore the file or re-run training"
            )
        return cls(names, colors, tuple(table))

    @classmethod
    def from_names(
        cls, names: tuple[str, ...], ignore: tuple[int, ...] = (), colors: tuple[tuple[int, int, int], ...] = ()
    ) -> "ClassMap":
        """Mask values 0..K-1 are the classes ``names`` in order; ``ignore`` values are void; ``colors`` (one RGB
        per class, or empty for the VOC palette) are the display colours."""
        return _build(tuple(names), dict(enumerate(colors)), {v: v for v in range(len(names))}, ignore)

    @classmethod
    def plain(cls, num_classes: int, ignore: tuple[int, ...] = ()) -> "ClassMap":
        """Values 0..K-1 are the classes themselves; default names (background, foreground / class i)."""
        return _build(default_names(num_classes), {}, {v: v for v in range(num_classes)}, ignore)


# --------------------------------------------------------------------------------------------------------------
# label files


@dataclass(frozen=True)
class LabelFile:
    """What a label file declares: ``{mask value: name}``, optional colours, and ignored values."""

    path: Path
    names: dict[int, str]
    colors: dict[int, tuple[int, int, int]]
    ignore: tuple[int, ...]


def read_label_file(path: str | Path) -> LabelFile:
    """Read ``labels.txt`` or ``labels.json`` (see the module doc).

    Raises:
        PixelwiseError: unreadable file or a malformed line, naming the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise PixelwiseError(f"{path}: cannot read the label file ({err.__class__.__name__}); check the path")
    names: dict[int, str] = {}
    colors: dict[int, tuple[int, int, int]] = {}
    ignore: list[int] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
            entries = data["classes"] if isinstance(data, dict) else data
            for entry in entries:
                index = _value(entry["index"], path)
                names[index] = str(entry["name"])
                if entry.get("color") is not None:
                    colors[index] = _colour(entry["color"], path)
            ignore = [_value(v, path) for v in (data.get("ignore", []) if isinstance(data, dict) else [])]
        except (ValueError, KeyError, TypeError) as err:
            raise PixelwiseError(
                f"{path}: not a label file ({err}); write "
                '{"classes": [{"index": 0, "name": "background"}, ...], "ignore": [255]}'
            )
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit():
                raise PixelwiseError(f"{path}: line {number} '{line}': write 'INDEX NAME' (e.g. '1 lesion')")
            index = _value(parts[0], path)
            rest = parts[1:]
            colour = None
            if len(rest) >= 4 and all(p.isdigit() for p in rest[-3:]):
                colour, rest = _colour(rest[-3:], path), rest[:-3]
            elif len(rest) >= 2 and re.fullmatch(r"#[0-9a-fA-F]{6}", rest[-1]):
                colour, rest = _colour(rest[-1], path), rest[:-1]
            name = " ".join(rest)
            if name.casefold() in VOID_NAMES:
                ignore.append(index)
                continue
            if index in names:
                raise PixelwiseError(f"{path}: line {number}: value {index} is named twice; keep one line")
            names[index] = name
            if colour:
                colors[index] = colour
    if not names:
        raise PixelwiseError(f"{path}: names no class; write one 'INDEX NAME' line per class")
    return LabelFile(path, names, colors, tuple(sorted(set(ignore))))


def require_label_file(path: str | Path) -> None:
    """Refuse a ``--labels`` path that is not a file, in one line with the fix (``train`` and ``data check``)."""
    if not Path(path).is_file():
        raise PixelwiseError(f"--labels {path}: no such file; give a labels.txt ('INDEX NAME' lines) or labels.json")


def find_label_file(root: Path) -> Path | None:
    """The label file in a data set folder (or beside a CSV), if there is one."""
    folder = root.parent if root.is_file() else root
    for name in LABEL_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _value(text, path: Path) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise PixelwiseError(f"{path}: mask value {value} is outside 0..255")
    return value


def _colour(value, path: Path) -> tuple[int, int, int]:
    if isinstance(value, str):
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    rgb = tuple(int(v) for v in value)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise PixelwiseError(f"{path}: colour {value} must be three values 0..255")
    return rgb  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------
# merging


def parse_merge(text: str) -> list[tuple[str, list[str]]]:
    """``"upper=blouse,coat;lower=pants"`` (or the path of a file with one ``NAME=LABEL,...`` per line) →
    ``[("upper", ["blouse", "coat"]), ("lower", ["pants"])]``."""
    if "=" not in text and Path(text).is_file():
        try:
            text = Path(text).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise PixelwiseError(f"--merge {text}: cannot read the file ({err.__class__.__name__})")
    groups: list[tuple[str, list[str]]] = []
    chunks = [c for line in text.splitlines() for c in line.split("#", 1)[0].split(";")]
    for chunk in chunks:
        chunk = chunk.strip()
        if not chunk:
            continue
        name, sep, members = chunk.partition("=")
        labels = [m.strip() for m in members.split(",") if m.strip()]
        if not sep or not name.strip() or not labels:
            raise PixelwiseError(
                f"--merge: cannot read '{chunk}'; write NEW=LABEL,LABEL;NEW2=LABEL "
                "(e.g. 'upper=blouse,coat;lower=pants,jeans')"
            )
        if any(name.strip() == g for g, _ in groups):
            raise PixelwiseError(f"--merge: class '{name.strip()}' is defined twice; list its labels once")
        groups.append((name.strip(), labels))
    if not groups:
        raise PixelwiseError("--merge: no group given; write NEW=LABEL,LABEL;... ")
    return groups


def _merged(
    labels: LabelFile | None,
    groups: list[tuple[str, list[str]]],
    ignore: tuple[int, ...],
) -> tuple[ClassMap, list[str]]:
    """The class map of merged groups, and the labels that joined the background without being named."""
    names_by_value = labels.names if labels else {}
    lookup: dict[str, int] = {}
    for value, name in names_by_value.items():
        lookup.setdefault(name.casefold(), value)
    class_names = ["background"] + [n for n, _ in groups if n.casefold() != "background"]
    target: dict[int, int] = {}
    wildcard: int | None = None
    for name, members in groups:
        index = 0 if name.casefold() == "background" else class_names.index(name)
        for member in members:
            if member == "*":
                if wildcard is not None:
                    raise PixelwiseError("--merge: '*' appears in two groups; keep it in one")
                wildcard = index
                continue
            value = lookup.get(member.casefold())
            if value is None and member.isdigit():
                value = int(member)
            if value is None or not 0 <= value <= 255:
                known = ", ".join(sorted(names_by_value.values())[:12]) or "none: give --labels FILE"
                raise PixelwiseError(f"--merge: unknown label '{member}'; labels are: {known}...")
            if value in target and target[value] != index:
                raise PixelwiseError(f"--merge: label '{member}' is in two groups; keep it in one")
            target[value] = index
    rest = [v for v in names_by_value if v not in target and v not in ignore]
    unnamed = [] if wildcard is not None else [names_by_value[v] for v in rest if v != 0]
    for value in rest:
        target[value] = wildcard if wildcard is not None and value != 0 else 0
    return _build(tuple(class_names), {}, target, ignore), unnamed


def _build(
    names: tuple[str, ...], colors: dict[int, tuple[int, int, int]], target: dict[int, int], ignore: tuple[int, ...]
) -> ClassMap:
    table = [UNKNOWN] * 256
    for value, index in target.items():
        table[value] = index
    for value in ignore:
        table[value] = IGNORE
    return ClassMap(tuple(names), tuple(colors.get(i) or voc_colour(i) for i in range(len(names))), tuple(table))


def class_map_for(
    labels_path: Path | None, merge: str | None, ignore: tuple[int, ...] = ()
) -> tuple[ClassMap | None, list[str]]:
    """The class map of a label file, ``--merge`` and ``--ignore-index``; None when none of them is given.

    Returns:
        ``(class map, notes)``: notes are one-line messages for the user (labels merged into the background).
    """
    labels = read_label_file(labels_path) if labels_path else None
    ignore = tuple(sorted(set(ignore) | set(labels.ignore if labels else ())))
    if merge:
        groups = parse_merge(merge)
        class_map, unnamed = _merged(labels, groups, ignore)
        notes = (
            [
                f"--merge: {len(unnamed)} label(s) named in no group join the background: "
                + ", ".join(unnamed[:10])
                + (" ..." if len(unnamed) > 10 else "")
                + " (list them, or add '*' to a group)"
            ]
            if unnamed
            else []
        )
        return class_map, notes
    if labels is not None:
        values = sorted(labels.names)
        if values != list(range(len(values))):
            raise PixelwiseError(
                f"{labels.path}: class values must be 0..K-1 without gaps (found {values[:8]}...); "
                f"renumber them, or map them with --merge"
            )
        if len(values) < 2:
            raise PixelwiseError(f"{labels.path}: names one class; a run needs background + at least one class")
        names = tuple(labels.names[v] for v in values)
        return _build(names, labels.colors, {v: v for v in values}, ignore), []
    return None, []  # the class count is learned from the masks (ClassMap.plain, with any --ignore-index)
