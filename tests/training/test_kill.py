"""kill -9 at random moments: real training processes are killed again and again (mostly while they write
checkpoints, since they save every iteration), resumed each time, and must end bitwise equal to an
uninterrupted run, with every scalar logged once."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stargan.checkpoints import checkpoint_dirs
from tests import tiny

pytestmark = pytest.mark.slow

KILLS = 20
TOTAL = 24
# a checkpoint every iteration, so that most kills land in a checkpoint write; samples now and then
RUN = tiny.V2 + ["train.sample_every=5", "train.save_every=1", "train.keep_last=2",
                 f"train.total_iters={TOTAL}"]


def start(run: Path, data: Path) -> subprocess.Popen:
    if (run / "config.yaml").is_file():
        args = ["--resume", str(run)]
    else:
        args = ["--preset", "demo", "--data", str(data), "--run-dir", str(run), *tiny.as_cli_flags(RUN)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stargan.cli", "train", "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def logged_steps(run: Path) -> int:
    path = run / "logs" / "scalars.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def stale(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob(".tmp-*")) if (run / "checkpoints").is_dir() else []


def final_state(run: Path) -> tuple[dict[str, torch.Tensor], dict, str]:
    ckpt = checkpoint_dirs(run)[-1]
    meta = torch.load(ckpt / "state.pt", weights_only=True)
    return load_file(str(ckpt / "networks.safetensors")), meta, (run / "logs" / "scalars.jsonl").read_text()


def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(demo_data, tmp_path):
    reference = tmp_path / "reference"
    done = start(reference, demo_data)
    assert done.wait(timeout=300) == 0, done.stderr.read()[-2000:]
    ref_tensors, ref_meta, ref_log = final_state(reference)

    rng = random.Random(1234)
    kills, rounds, stale_seen = 0, 0, 0
    started = time.monotonic()
    while kills < KILLS:
        run = tmp_path / f"run{rounds}"
        while True:
            leftovers = stale(run)
            before = logged_steps(run)
            proc = start(run, demo_data)
            # wait until this process trains (a new scalar line), then kill it a moment later
            deadline = time.monotonic() + 120
            while proc.poll() is None and logged_steps(run) <= before and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                if leftovers:  # what the last kill left behind was cleared before training went on
                    assert not set(leftovers) & set(stale(run)), leftovers
                time.sleep(rng.uniform(0.0, 0.25))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                stale_seen += bool(stale(run))
                continue
            out, err = proc.communicate()
            assert proc.returncode == 0, err[-3000:]
            break  # this run finished: compare it with the uninterrupted one
        tensors, meta, log = final_state(run)
        assert meta["step"] == TOTAL == ref_meta["step"]
        assert tensors.keys() == ref_tensors.keys()
        for key, value in ref_tensors.items():
            assert torch.equal(tensors[key], value), key
        for name, opt in ref_meta["optimizers"].items():
            for index, moments in opt["state"].items():
                for key, value in moments.items():
                    assert torch.equal(meta["optimizers"][name]["state"][index][key], value), (name, key)
        assert log == ref_log  # every step logged exactly once, with the same values
        assert not stale(run)
        rounds += 1
    print(f"{kills} kills in {rounds} runs, {stale_seen} of them during a checkpoint write, "
          f"{time.monotonic() - started:.0f} s")


def test_kill_9_with_a_data_loader_worker_then_an_immediate_resume_is_not_refused(demo_data, tmp_path):
    """The run's lock belongs to the training process: its forked data-loader worker, alive for a moment
    after ``kill -9``, must not make ``--resume`` fail with "being trained by another process"."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stargan.cli", "train", "--no-progress", "--preset", "demo",
                             "--data", str(demo_data), "--run-dir", str(run),
                             *tiny.as_cli_flags(RUN + ["data.num_workers=1"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and logged_steps(run) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([sys.executable, "-m", "stargan.cli", "train", "--no-progress", "--resume", str(run)],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert logged_steps(run) == TOTAL
