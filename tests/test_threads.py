"""CPU thread count: the cores other processes keep busy are left out, unless the user chose."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from stargan import threads
from stargan.cli import main

# /proc/stat before and after: cpu0 idle throughout, cpu1 busy for 90 of 100 ticks, cpu2 outside the affinity
BEFORE = """cpu  0 0 0 0 0 0 0 0 0 0
cpu0 100 0 0 900 0 0 0 0 0 0
cpu1 100 0 0 900 0 0 0 0 0 0
cpu2 0 0 0 0 0 0 0 0 0 0
intr 1 2 3
"""
AFTER = """cpu  0 0 0 0 0 0 0 0 0 0
cpu0 100 0 0 1000 0 0 0 0 0 0
cpu1 170 5 10 908 2 0 3 2 0 0
cpu2 500 0 0 0 0 0 0 0 0 0
intr 1 2 3
"""


def test_cpu_times_sum_busy_and_total_ticks_over_the_given_cpus_only():
    assert threads.cpu_times(BEFORE, {0, 1}) == (200, 2000)
    # cpu1: user 170 + nice 5 + system 10 + irq 0 + softirq 3 + steal 2 busy; idle 908 + iowait 2 not
    assert threads.cpu_times(AFTER, {0, 1}) == (290, 2200)
    assert threads.cpu_times(AFTER, {2}) == (500, 500)


def test_busy_cores_is_the_busy_share_of_the_interval_times_the_cores(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text(BEFORE)
    monkeypatch.setattr(threads, "PROC_STAT", stat)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: stat.write_text(AFTER))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    assert threads.busy_cores() == pytest.approx(2 * 90 / 200)


@pytest.mark.skipif(not threads.PROC_STAT.exists(), reason="Linux only")
def test_busy_cores_sees_a_process_spinning_on_a_core():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert threads.busy_cores(interval=1.0) >= 0.5  # one core's worth, give or take the scheduler
    finally:
        spinner.kill()
        spinner.wait()


def test_busy_cores_is_none_without_proc_stat(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "missing")
    assert threads.busy_cores(interval=0) is None


@pytest.mark.parametrize("default,cores,busy,expected", [
    (2, 2, 0.0, 2), (2, 2, 0.4, 2), (2, 2, 0.6, 1), (2, 2, 1.0, 1), (2, 2, 2.0, 1),
    (4, 8, 3.0, 4), (4, 8, 5.0, 3)])
def test_threads_for_leaves_out_the_busy_cores(default, cores, busy, expected):
    assert threads.threads_for(default, cores, busy) == expected


@pytest.fixture
def two_threads(monkeypatch):
    """torch at 2 threads, OMP_NUM_THREADS unset, 2 cores; restores the suite's 1 thread."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(1)


def test_a_busy_core_is_left_out_and_said(two_threads, monkeypatch, capsys):
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.9)
    threads.choose_threads(None)
    assert torch.get_num_threads() == 1
    assert "CPU threads: 1 of 2" in capsys.readouterr().err


def test_an_idle_machine_keeps_every_thread_and_says_nothing(two_threads, monkeypatch, capsys):
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.1)
    threads.choose_threads(None)
    assert torch.get_num_threads() == 2
    assert capsys.readouterr().err == ""


def test_the_users_choice_wins(two_threads, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: pytest.fail("should not look"))
    threads.choose_threads(3)
    assert torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    threads.choose_threads(None)
    assert torch.get_num_threads() == 3


def test_cli_threads_option_sets_torch_threads_and_rejects_zero(two_threads, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "nowhere", "--threads", "x"])
    assert main(["eval", "nowhere", "--threads", "0"]) == 2
    assert "--threads 0: give a number of CPU threads, 1 or more" in capsys.readouterr().err
    main(["eval", "nowhere", "--threads", "3"])  # fails on the missing run, after setting the threads
    assert torch.get_num_threads() == 3



@pytest.mark.parametrize("command", [
    ["train"], ["demo"], ["eval", "RUN"], ["classifier", "train", "DATA", "--out", "c.safetensors"],
    ["sample", "RUN"], ["translate", "RUN", "--input", "x.png", "--domain", "dog", "--out", "OUT"],
    ["interpolate", "RUN", "--input", "x.png", "--references", "r.png", "--out", "a.gif"], ["serve", "RUN"]])
def test_every_command_that_runs_a_network_takes_threads(command):
    from stargan.cli import build_parser

    assert build_parser().parse_args(command + ["--threads", "2"]).threads == 2
    assert build_parser().parse_args(command).threads is None  # chosen from the busy cores
