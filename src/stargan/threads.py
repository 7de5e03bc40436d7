"""How many CPU threads torch computes with: one per core, fewer when other processes keep cores busy.

Why fewer: torch splits each operation over its OpenMP threads and waits for the slowest. A thread that
shares its core with another busy process gets a fraction of that core, and every operation waits for it.
Measured on 2 cores with one other busy process, a `demo` training step took 850-940 ms with 2 threads
and 320 ms with 1; on the idle machine, 212 ms with 2 and 305 ms with 1. So a long job looks once, at
its start, at how busy this process's cores are, and leaves out the busy ones. ``--threads N`` or
``OMP_NUM_THREADS`` (torchrun sets it to 1 per process) choose the count instead.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def cpu_times(stat_text: str, cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks summed over ``cpus`` from the text of /proc/stat."""
    busy = total = 0
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def busy_cores(interval: float = 0.3) -> float | None:
    """How many of this process's cores other processes kept busy over ``interval`` seconds (this
    process sleeps meanwhile); None where /proc/stat is missing (not Linux)."""
    try:
        cpus = os.sched_getaffinity(0)
        before = cpu_times(PROC_STAT.read_text(), cpus)
        time.sleep(interval)
        after = cpu_times(PROC_STAT.read_text(), cpus)
    except (OSError, AttributeError, ValueError):
        return None
    busy, total = after[0] - before[0], after[1] - before[1]
    return len(cpus) * busy / total if total > 0 else None


def threads_for(default: int, cores: int, busy: float) -> int:
    """torch's default thread count less the cores others keep busy (rounded), at least 1."""
    return max(1, min(default, round(cores - busy)))


def choose_threads(requested: int | None) -> None:
    """Set torch's thread count: ``requested`` when given; else, unless OMP_NUM_THREADS is set, torch's
    default less the cores other processes are using now (said on stderr when that leaves some out)."""
    import torch

    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads {requested}: give a number of CPU threads, 1 or more")
        torch.set_num_threads(requested)
        return
    default = torch.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ or default == 1:
        return
    busy = busy_cores()
    if busy is None:
        return
    chosen = threads_for(default, len(os.sched_getaffinity(0)), busy)
    if chosen < default:
        torch.set_num_threads(chosen)
        print(f"CPU threads: {chosen} of {default}: other processes are keeping about {busy:.1f} cores busy "
              f"(--threads {default} uses them all anyway)", file=sys.stderr)
