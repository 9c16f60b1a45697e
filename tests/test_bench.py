"""``pixelwise bench``: a tiny configuration end to end, and the pieces that make its numbers."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from typer.testing import CliRunner

from pixelwise import bench
from pixelwise.cli import app
from pixelwise.errors import PixelwiseError


def numbers(tree, path=""):
    """Every (path, number) leaf of a JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from numbers(value, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_bench_cli_tiny_configuration_writes_complete_json(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "cache"))  # the synthetic set is written there
    monkeypatch.setenv("PIXELWISE_THREADS", "1")  # tiny tensors; immune to a busy second core
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            app,
            [
                "bench",
                "--json",
                str(out),
                "--size",
                "32",
                "--models",
                "unet,segnet",
                "--reps",
                "1",
                "--warmup",
                "0",
                "--images",
                "8",
                "--batch",
                "4",
            ],
            catch_exceptions=False,
        )
    finally:
        torch.set_num_threads(threads)  # the command sets the process's threads from PIXELWISE_THREADS
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    assert {"machine", "train", "data", "inference", "memory"} <= set(results)
    assert "lesson_ratio" not in results, "the lesson's loop is a yardstick in benchmarks/, not part of the package"
    assert set(results["train"]["models"]) == {"unet", "segnet"}
    for row in results["train"]["models"].values():
        assert row["fp32_nchw"] > 0 and row["fast"] > 0
    for engine in ("torch_default", "torch_fp32", "onnxruntime"):
        for batch in ("batch_1", "batch_4"):
            figures = results["inference"][engine][batch]
            assert figures["ms_per_image"] == pytest.approx(1000.0 / figures["images_per_s"])
    memory = results["memory"]
    for key in ("train", "inference_torch", "inference_onnx"):
        assert 0 < memory[key]["baseline_mb"] <= memory[key]["peak_mb"] < 64 * 1024
    measured = {p: v for p, v in numbers({k: v for k, v in results.items() if k not in ("machine", "settings")})}
    assert measured and all(math.isfinite(v) and v > 0 for v in measured.values()), measured
    assert results["machine"]["cores"] == os.cpu_count()


def test_median_rate_is_the_median_after_warmup(monkeypatch):
    durations = iter([100.0, 1.0, 2.0, 4.0])  # the warm-up call (100 s) must not count
    clock = {"now": 0.0}

    def work() -> int:
        clock["now"] += next(durations)
        return 8

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    assert bench.median_rate(work, warmup=1, reps=3, device=torch.device("cpu")) == pytest.approx(8 / 2.0)


def test_lesson_loader_is_the_lessons_float_data():
    """The yardstick of benchmarks/lesson_loop.py (outside the package) feeds the lesson's float data."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "lesson_loop.py"
    spec = importlib.util.spec_from_file_location("lesson_loop", path)
    lesson_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lesson_loop)
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    masks = torch.randint(0, 2, (40, 16, 16), dtype=torch.uint8)
    batches = list(lesson_loop.lesson_loader(images, masks))
    assert [len(x) for x, _ in batches] == [32, 8]
    x, y = batches[0]
    assert x.dtype == y.dtype == torch.float32 and x.shape[1:] == (3, 16, 16) and y.shape[1:] == (1, 16, 16)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and set(y.unique().tolist()) <= {0.0, 1.0}


def test_bad_settings_are_user_errors(tmp_path):
    from pixelwise.models import model_spec

    stride = max(model_spec(bench.DEFAULTS.model).stride, 16)  # the default network is benchmarked too
    with pytest.raises(PixelwiseError, match=f"multiple of {stride}"):
        bench.run_bench(bench.BenchSettings(size=40, models=("unet",)))
    with pytest.raises(PixelwiseError, match="unknown model"):
        bench.run_bench(bench.BenchSettings(models=("nope",)))
    with pytest.raises(PixelwiseError, match="does not exist"):
        bench.run_bench(bench.BenchSettings(size=32, models=("unet",), data=str(tmp_path / "missing")))


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_other_load_sees_a_busy_process():
    import subprocess
    import sys
    import time

    load = bench.OtherLoad()
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 2.0\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(1.2)
        # Measured while the child runs (not yet reaped, so not counted as this process's CPU): about one core.
        assert load.cores() > 0.5
    finally:
        busy.wait()
