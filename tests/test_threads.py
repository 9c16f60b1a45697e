"""The thread governor: threads follow the cores other programs leave free (benchmarks/busy.py measures why)."""

from __future__ import annotations

import pytest
import torch

from pixelwise import runtime
from pixelwise.runtime import ThreadGovernor


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.delenv("PIXELWISE_THREADS", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_are_the_cores_left_free(two_cores):
    governor = ThreadGovernor()
    assert [governor.threads_for(busy) for busy in (0.0, 0.4, 0.6, 1.0, 1.9, 5.0)] == [2, 2, 1, 1, 1, 1]


def test_a_competitor_lowers_the_threads_and_its_end_raises_them(two_cores, monkeypatch):
    clock = {"others": 0.0, "t": 0.0}
    reads = []

    def others():
        reads.append(clock["t"])
        return clock["others"], clock["t"]

    monkeypatch.setattr(runtime, "cpu_seconds_of_others", others)
    monkeypatch.setattr(runtime, "monotonic", lambda: clock["t"])  # the governor's own look at the clock
    changes = []
    torch.set_num_threads(2)
    governor = ThreadGovernor(interval=10.0, on_change=lambda threads, busy: changes.append((threads, round(busy, 2))))
    assert governor.enabled
    clock.update(others=9.0, t=5.0)  # too early to look again
    assert governor.check() is None and torch.get_num_threads() == 2
    clock.update(others=10.0, t=10.0)  # 10 core-seconds in 10 s: another program holds a core
    assert governor.check() == 1 and torch.get_num_threads() == 1
    clock.update(others=11.0, t=30.0)  # 1 core-second in 20 s: it is gone
    assert governor.check() == 2 and torch.get_num_threads() == 2
    assert changes == [(1, 1.0), (2, 0.05)]
    assert reads == [0.0, 10.0, 30.0]  # /proc/stat is read once per interval, not at every training step


@pytest.mark.parametrize("variable", ["PIXELWISE_THREADS", "WORLD_SIZE"])
def test_the_users_choice_and_torchrun_turn_it_off(two_cores, monkeypatch, variable):
    monkeypatch.setenv(variable, "2")
    monkeypatch.setattr(runtime, "cpu_seconds_of_others", lambda: (0.0, 0.0))
    assert not ThreadGovernor().enabled


def test_no_proc_stat_turns_it_off(two_cores, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_seconds_of_others", lambda: None)
    assert not ThreadGovernor().enabled and ThreadGovernor().check() is None
