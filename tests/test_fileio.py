"""Atomic writes: readers never see partial files, failures leave the old file, permissions are usual."""

import os

import pytest

from pixelwise.fileio import atomic_write, atomic_write_json, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "config.json", "old")

    def half_written(path):
        path.write_text("partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_written)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_files_get_umask_permissions_not_mkstemp_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "summary.json", {"dice": 0.9})
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert path.read_text().strip().startswith("{")


def test_nan_and_infinity_are_written_as_null_so_the_file_is_valid_json(tmp_path):
    import json

    import numpy as np

    path = atomic_write_json(
        tmp_path / "s.json",
        {"dice": float("nan"), "hd95": [float("inf"), np.float32("nan")], "n": np.int64(3), "ok": 0.5},
    )
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert json.loads(path.read_text()) == {"dice": None, "hd95": [None, None], "n": 3, "ok": 0.5}


def test_first_line_of_an_exception_with_an_empty_message():
    from pixelwise.fileio import first_line

    assert first_line(ValueError("")) == "ValueError"
    assert first_line(RuntimeError("\n  \nsecond line\nthird")) == "second line"
