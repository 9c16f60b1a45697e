"""Training under torchrun (gloo on this CPU): a real 2-process run, one step equal to a 1-process step on the
same global batch, exact sharded validation, and ranks with skewed clocks that still agree."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from forked import import_once, run_pixelwise

from pixelwise.cli import main  # noqa: F401  (the package imports cleanly before processes start)
from pixelwise.errors import PixelwiseError
from pixelwise.train.distributed import Distributed, check_batch, rank_slices

from tiny_run import trained_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_forked(worker, args: tuple) -> None:
    """Two ranks as forked children of this process (they inherit its imports: a spawned interpreter spends
    ~7 s importing torch and MONAI); torchrun's own start is tested above with fresh processes."""
    import_once()
    mp.start_processes(worker, args=args, nprocs=2, join=True, start_method="fork")


def test_global_batches_are_sliced_per_rank_and_the_last_incomplete_one_dropped():
    order = torch.arange(23)
    rank0 = rank_slices(order, 8, Distributed(rank=0, world=2))
    rank1 = rank_slices(order, 8, Distributed(rank=1, world=2))
    assert rank0.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert rank1.tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    with pytest.raises(PixelwiseError, match="--batch-size 6"):
        check_batch(6, 4)
    check_batch(8, 2)


def test_torchrun_two_processes_train_a_complete_loadable_run(tmp_path):
    env = {**os.environ, "PIXELWISE_THREADS": "1", "PIXELWISE_DIST_TIMEOUT": "120"}
    synth = run_pixelwise(["data", "synth", tmp_path / "data", "--n", "24", "--size", "32"], env=env)
    assert synth.returncode == 0, synth.stderr
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "pixelwise",  # the real entry point, started by torchrun in two fresh interpreters
        "train",
        "--data",
        tmp_path / "data",
        "--out",
        tmp_path / "run",
        "--epochs",
        "2",
        "--size",
        "32",
        "--batch-size",
        "8",
        "--model",
        "segnet",
        "--augment",
        "light",
        "--cache-dir",
        tmp_path / "cache",
    ]
    result = subprocess.run(list(map(str, command)), env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    assert [int(r["epoch"]) for r in csv.DictReader((run / "metrics.csv").open())] == [1, 2]
    state = json.loads((run / "train_state.json").read_text())["loop"]
    assert state["world_size"] == 2 and state["finished"] and state["step"] == 2 * (16 // 8)
    config = json.loads((run / "config.json").read_text())["record"]
    assert config["num_classes"] == 2 and config["processes"] == 2
    out = run_pixelwise(["predict", run, tmp_path / "data" / "images", "--out", tmp_path / "masks"], env=env)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "masks").glob("*_mask.png"))) == 24


def toy_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))


def toy_batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=generator)
    masks = (torch.rand(8, 16, 16, generator=generator) > 0.5).to(torch.uint8)
    return images, masks


def _one_step_worker(rank: int, port: int, out: str) -> None:
    from pixelwise.data.augment import build_augment
    from pixelwise.losses import build_loss
    from pixelwise.train.data import TrainData
    from pixelwise.train.loop import Validation, train_step, validate

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    net = toy_net()
    model = torch.nn.parallel.DistributedDataParallel(net)
    config = trained_config(2, size=16, fast=False, batch_size=8).record
    images, masks = toy_batch()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    index = rank_slices(torch.arange(8), 8, Distributed(rank, 2))
    train_step(
        model,
        optimizer,
        build_loss("bce"),
        build_augment("none"),
        images[index],
        masks[index],
        config,
        torch.device("cpu"),
    )
    data = TrainData(images, masks, images[:7], masks[:7], 2, {})
    val: Validation = validate(net, data, build_loss("bce"), config, torch.device("cpu"), Distributed(rank, 2))
    if rank == 0:
        torch.save({"state": net.state_dict(), "val": (val.loss, val.dice)}, out)
    del model
    dist.barrier()  # as train() does: no rank closes its connections while the other still uses them
    dist.destroy_process_group()


def test_one_ddp_step_equals_one_step_on_the_global_batch_and_validation_is_exact(tmp_path):
    """A BatchNorm-free network: gradients averaged over 2 ranks of 4 images = the gradient of 8 images."""
    from pixelwise.data.augment import build_augment
    from pixelwise.losses import build_loss
    from pixelwise.train.data import TrainData
    from pixelwise.train.loop import train_step, validate

    out = tmp_path / "rank0.pt"
    start_forked(_one_step_worker, (free_port(), str(out)))
    got = torch.load(out, weights_only=True)
    net = toy_net()
    config = trained_config(2, size=16, fast=False, batch_size=8).record
    images, masks = toy_batch()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    train_step(net, optimizer, build_loss("bce"), build_augment("none"), images, masks, config, torch.device("cpu"))
    for name, value in net.state_dict().items():
        assert torch.allclose(value, got["state"][name], atol=1e-6), name
    single = validate(
        net, TrainData(images, masks, images[:7], masks[:7], 2, {}), build_loss("bce"), config, torch.device("cpu")
    )
    assert got["val"][0] == pytest.approx(single.loss, rel=1e-6)
    assert got["val"][1] == pytest.approx(single.dice, rel=1e-9, abs=1e-12)


def _skewed_clock_worker(rank: int, port: int, root: str) -> None:
    import time

    from pixelwise.config import Recipe
    from pixelwise.train import loop

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE="2",
        PIXELWISE_DIST_TIMEOUT="60",
    )
    torch.set_num_threads(1)
    if rank == 1:  # this rank's clock runs 5x fast: alone it would plan far fewer epochs than rank 0
        real = time.perf_counter
        start = real()

        class SkewedTime:
            def __getattr__(self, name):
                return getattr(time, name)

            @staticmethod
            def perf_counter():
                return start + 5 * (real() - start)

        loop.time = SkewedTime()
    config = Recipe(
        data=str(Path(root) / "data"),
        size=32,
        batch_size=8,
        model="segnet",
        augment="none",
        epochs=1000,
        budget_seconds=4.0,
        cache_dir=str(Path(root) / "cache"),
    )
    loop.train(config, Path(root) / "run")
    state = json.loads((Path(root) / "run" / "train_state.json").read_text())["loop"]
    Path(root, f"epochs{rank}").write_text(str(state["epoch"]))


def test_ranks_with_skewed_clocks_follow_rank_0_and_finish(tmp_path):
    from pixelwise.data.synth import make_synth_dataset

    make_synth_dataset(tmp_path / "data", n=24, size=32, seed=0, progress=False)
    start_forked(_skewed_clock_worker, (free_port(), str(tmp_path)))
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) >= 2
    assert (tmp_path / "epochs0").read_text() == (tmp_path / "epochs1").read_text() == str(len(rows))
