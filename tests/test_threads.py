"""The thread policy: an explicit setting wins, else the cores that the load average and a short sample leave free."""

from __future__ import annotations

import os

import pytest

from fedshare import threads


@pytest.mark.parametrize(
    "environment, load, expected",
    [
        ({"FEDSHARE_THREADS": "3", "OMP_NUM_THREADS": "1"}, 0.0, (3, "FEDSHARE_THREADS")),
        ({"OMP_NUM_THREADS": "2"}, 5.0, (2, "OMP_NUM_THREADS")),
        ({}, 0.2, (4, "free cores")),  # idle: every core
        ({}, 1.6, (2, "free cores")),  # two cores busy elsewhere
        ({}, 9.0, (1, "free cores")),  # overloaded: still one thread
        ({"OMP_NUM_THREADS": "zero"}, 0.0, (4, "free cores")),  # not a number: ignored
    ],
)
def test_threads_follow_the_setting_or_the_free_cores(monkeypatch, environment, load, expected):
    for name in ("FEDSHARE_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(threads, "busy_now", lambda: None)  # no /proc/stat sample: the load average alone
    assert threads.chosen_threads() == expected


@pytest.mark.parametrize(
    "load, sampled, expected",
    [
        (1.0, 0.1, 4),  # a job just ended: the load average still counts it, the sample does not
        (0.1, 1.9, 4),  # a burst during the sample alone: the load average says the machine is idle
        (2.2, 2.0, 2),  # busy by both measures
    ],
)
def test_free_cores_take_the_smaller_of_load_average_and_sample(monkeypatch, load, sampled, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(threads, "busy_now", lambda: sampled)
    assert threads.free_cores() == expected


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc/stat")
def test_the_sample_sees_a_busy_core():
    import threading

    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        busy = threads.busy_now(0.5)
    finally:
        stop.set()
        spinner.join()
    # the spinning thread holds about one core (other processes can only add to it)
    assert busy is not None and 0.5 <= busy <= (os.cpu_count() or 1) + 0.1


def test_apply_sets_torch_threads(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("FEDSHARE_THREADS", "1")
    try:
        assert threads.apply_thread_policy() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
