"""course_lib.device: the thread policy (one thread on a busy machine, torch's default otherwise, $COURSE_THREADS wins)."""
import os

import pytest
import torch

from course_lib import device as D


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    n = torch.get_num_threads()
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    yield
    torch.set_num_threads(n)


def test_busy_machine_gets_one_thread(monkeypatch, capsys):
    monkeypatch.setattr(D, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 1.0, 1.0))
    assert D.set_cpu_threads() == 1 and torch.get_num_threads() == 1
    assert "busy: load 1.6 on 2 CPUs" in capsys.readouterr().out


def test_idle_machine_keeps_torchs_default(monkeypatch, capsys):
    torch.set_num_threads(2)
    monkeypatch.setattr(D, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 1.0, 1.0))  # 2 of 8 CPUs busy: not a busy machine
    assert D.set_cpu_threads() == 2
    assert "torch's default" in capsys.readouterr().out


def test_environment_and_argument_win(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 1.0, 1.0))
    monkeypatch.setenv("COURSE_THREADS", "2")
    assert D.set_cpu_threads(verbose=False) == 2
    assert D.set_cpu_threads(3, verbose=False) == 3
    with pytest.raises(ValueError, match=">= 1"):
        D.set_cpu_threads(0)


def test_no_load_average_means_not_busy(monkeypatch):
    def unavailable():
        raise OSError("no /proc/loadavg")
    monkeypatch.setattr(os, "getloadavg", unavailable)
    torch.set_num_threads(2)
    assert D.set_cpu_threads(verbose=False) == 2
