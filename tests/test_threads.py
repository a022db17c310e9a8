"""The thread policy: an explicit setting wins, else the cores that the load average leaves free."""

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
    assert threads.chosen_threads() == expected


def test_apply_sets_torch_threads(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("FEDSHARE_THREADS", "1")
    try:
        assert threads.apply_thread_policy() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
