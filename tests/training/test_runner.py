"""The shared training machinery (training/runner.py): run directories, resuming with changed settings,
signals, errors during training, the non-finite guard and failed checkpoint writes, for v2 and v1."""
from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from stargan import checkpoints
from stargan.checkpoints import CheckpointError, checkpoint_dirs
from stargan.cli import main
from stargan.config import load_config_yaml
from stargan.distributed import World
from stargan.nets.v1 import build_networks as build_v1_networks
from stargan.nets.v2 import build_networks
from stargan.state import make_train_state, make_v1_train_state
from stargan.training.v1 import loop as v1_loop
from stargan.training.v2 import loop as v2_loop
from stargan.training.runner import TrainingFailed, TrainingStopped, resume_and_record
from tests import tiny

NO_SAMPLES = "train.sample_every=100"  # these runs are about the run directory: no sample grids, faster
ARCHS = {
    "v2": (lambda data, *extra: tiny.v2_config(data, NO_SAMPLES, *extra), v2_loop.train, "train_step"),
    "v1": (lambda data, *extra: tiny.v1_config(data, NO_SAMPLES, *extra), v1_loop.train, "train_step"),
}
LOOPS = {"v2": v2_loop, "v1": v1_loop}


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- run directories ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["v2", "v1"])
def test_a_new_run_into_a_directory_holding_a_run_stops_before_touching_it(demo_data, tmp_path, arch):
    config, train, _ = ARCHS[arch]
    train(config(demo_data, "train.total_iters=2"), tmp_path, show_progress=False)
    before = listing(tmp_path)
    with pytest.raises(ValueError) as err:
        train(config(demo_data, "train.total_iters=4"), tmp_path, show_progress=False)
    message = str(err.value)
    assert str(tmp_path) in message and f"--resume {tmp_path}" in message and "--run-dir" in message
    assert listing(tmp_path) == before


def test_the_cli_refuses_a_used_run_dir_with_one_line(demo_data, tmp_path, capsys):
    args = ["train", "--preset", "demo", "--data", str(demo_data), "--run-dir", str(tmp_path / "run"),
            "--no-progress", *tiny.as_cli_flags(tiny.V2 + [NO_SAMPLES, "train.total_iters=1"])]
    assert main(args) == 0
    before = listing(tmp_path / "run")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds a run" in err and "--resume" in err
    assert listing(tmp_path / "run") == before


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path):
    config = tiny.v2_config()
    state = make_train_state(build_networks(config.model), config.optim)
    state.step = 10
    checkpoints.save_checkpoint(tmp_path, state, config, keep_last=1)
    state.step = 5  # an older step written later (e.g. by hand): it is the newest file, so it stays
    written = checkpoints.save_checkpoint(tmp_path, state, config, keep_last=1)
    assert written.is_dir() and written in checkpoint_dirs(tmp_path)


# ---- resuming with changed settings ----------------------------------------------------------------

def _state(arch: str, config):
    if arch == "v2":
        return make_train_state(build_networks(config.model), config.optim)
    return make_v1_train_state(build_v1_networks(config.model), config.optim)


@pytest.mark.parametrize("arch, overrides, expected_groups", [
    ("v2", ["optim.lr=2e-4", "optim.mapping_lr=3e-6", "optim.beta2=0.9", "optim.weight_decay=0",
            "train.total_iters=5", "loss.lambda_cyc=2", "train.sample_every=7"],
     {"generator": {"lr": 2e-4, "betas": (0.0, 0.9), "weight_decay": 0.0},
      "mapping_network": {"lr": 3e-6, "betas": (0.0, 0.9), "weight_decay": 0.0}}),
    ("v1", ["optim.beta1=0.3", "optim.beta2=0.9", "optim.g_lr=5e-4", "train.total_iters=5",
            "loss.lambda_rec=5"],
     {"generator": {"lr": 5e-4, "betas": (0.3, 0.9)}, "discriminator": {"betas": (0.3, 0.9)}}),
])
def test_resume_applies_changed_settings_records_and_lists_them(demo_data, tmp_path, capsys, arch, overrides,
                                                                expected_groups):
    config, train, _ = ARCHS[arch]
    first = config(demo_data, "train.total_iters=2")
    train(first, tmp_path, show_progress=False)
    resumed_config = load_config_yaml(tmp_path / "config.yaml").with_overrides(overrides)
    state = _state(arch, resumed_config)
    capsys.readouterr()
    resume_and_record(state, resumed_config, tmp_path, resume=True, world=World())
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert line.startswith("resumed from") and "changed:" in line
    for item in overrides:
        key, value = item.split("=")
        assert key in line
    for name, expected in expected_groups.items():
        group = state.optimizers[name].param_groups[0]
        for key, value in expected.items():
            assert group[key] == pytest.approx(value), (name, key)
    assert state.optimizers[next(iter(expected_groups))].state  # the Adam moments were restored
    assert load_config_yaml(tmp_path / "config.yaml") == resumed_config


@pytest.mark.parametrize("arch, overrides, named", [
    ("v2", ["model.style_dim=16", "model.img_size=32"], ["model.style_dim 8 -> 16", "model.img_size 16 -> 32"]),
    ("v2", ["data.domains=[a,b,c]"], ["data.domains ['circle', 'square', 'triangle'] -> ['a', 'b', 'c']"]),
    ("v1", ["model.g_conv_dim=16", "data.mode=celeba"], ["model.g_conv_dim 8 -> 16",
                                                          "data.mode 'folders' -> 'celeba'"]),
])
def test_resume_refuses_settings_that_define_the_networks_or_data(demo_data, tmp_path, arch, overrides, named):
    config, train, _ = ARCHS[arch]
    train(config(demo_data, "train.total_iters=2"), tmp_path, show_progress=False)
    before = listing(tmp_path)
    changed = load_config_yaml(tmp_path / "config.yaml").with_overrides(overrides)
    with pytest.raises(CheckpointError) as err:
        train(changed, tmp_path, resume=True, show_progress=False)
    for text in named:
        assert text in str(err.value)
    assert listing(tmp_path) == before


def test_resume_with_a_new_rate_trains_like_a_run_that_had_it_from_that_step(demo_data, tmp_path):
    """The restored optimizer really uses the new rate: compare with a run whose checkpoint was edited."""
    config, train, _ = ARCHS["v2"]
    train(config(demo_data, "train.total_iters=2"), tmp_path / "a", show_progress=False)
    resumed = load_config_yaml(tmp_path / "a" / "config.yaml").with_overrides(
        ["optim.lr=1e-2", "train.total_iters=3"])
    train(resumed, tmp_path / "a", resume=True, show_progress=False)
    same_rate = load_config_yaml(tmp_path / "a" / "config.yaml").with_overrides(["optim.lr=1e-4"])
    train(config(demo_data, "train.total_iters=2"), tmp_path / "b", show_progress=False)
    train(same_rate.with_overrides(["train.total_iters=3"]), tmp_path / "b", resume=True, show_progress=False)
    a = checkpoints.load_file(str(checkpoint_dirs(tmp_path / "a")[-1] / "networks.safetensors"))
    b = checkpoints.load_file(str(checkpoint_dirs(tmp_path / "b")[-1] / "networks.safetensors"))
    moved_a = (a["generator.from_rgb.weight"] - b["generator.from_rgb.weight"]).abs().max()
    assert moved_a > 1e-4  # a hundred times the rate moves the weights visibly differently


# ---- stop signals and errors during training ----------------------------------------------------

@pytest.mark.parametrize("arch", ["v2", "v1"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_finishes_the_iteration_and_saves_a_checkpoint(demo_data, tmp_path, monkeypatch, arch,
                                                                     signum):
    config, train, step_name = ARCHS[arch]
    real_step = getattr(LOOPS[arch], step_name)
    calls = []

    def signalled_step(state, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the signal arrives in the middle of the third iteration
            os.kill(os.getpid(), signum)
        return real_step(state, *args, **kwargs)

    monkeypatch.setattr(LOOPS[arch], step_name, signalled_step)
    handler = signal.getsignal(signum)
    with pytest.raises(TrainingStopped) as stopped:
        train(config(demo_data, "train.total_iters=10", "train.save_every=100"), tmp_path, show_progress=False)
    assert len(calls) == 3 and stopped.value.step == 3 and stopped.value.exit_status == 128 + signum
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-000003"]
    assert f"--resume {tmp_path}" in str(stopped.value)
    assert signal.getsignal(signum) is handler  # the previous handler is back


# ---- errors during training ----------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["v2", "v1"])
def test_a_data_error_saves_the_finished_iterations_and_names_the_step(demo_data, tmp_path, monkeypatch, arch):
    config, train, _ = ARCHS[arch]
    real_loader = LOOPS[arch].train_loader

    def failing_loader(*args, **kwargs):
        batches = real_loader(*args, **kwargs)
        for i in range(3):
            yield next(batches)
        raise OSError("image file is truncated")

    monkeypatch.setattr(LOOPS[arch], "train_loader", failing_loader)
    with pytest.raises(TrainingFailed, match="loading the batch of iteration 4 failed .*truncated"):
        train(config(demo_data, "train.total_iters=10"), tmp_path, show_progress=False)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-000002", "step-000003"]


@pytest.mark.parametrize("arch", ["v2", "v1"])
def test_an_error_inside_an_iteration_writes_no_checkpoint(demo_data, tmp_path, monkeypatch, arch):
    config, train, step_name = ARCHS[arch]
    real_step = getattr(LOOPS[arch], step_name)
    calls = []

    def step(state, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_step(state, *args, **kwargs)

    monkeypatch.setattr(LOOPS[arch], step_name, step)
    with pytest.raises(TrainingFailed) as err:
        train(config(demo_data, "train.total_iters=10"), tmp_path, show_progress=False)
    assert "iteration 3 failed" in str(err.value) and "out of memory" in str(err.value)
    assert "step-000002" in str(err.value)  # the last good checkpoint is named
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-000002"]


@pytest.mark.parametrize("arch", ["v2", "v1"])
def test_a_non_finite_loss_stops_training_without_saving_broken_weights(demo_data, tmp_path, monkeypatch, arch):
    config, train, step_name = ARCHS[arch]
    real_step = getattr(LOOPS[arch], step_name)
    calls = []

    def step(state, *args, **kwargs):
        calls.append(1)
        logs = real_step(state, *args, **kwargs)
        if len(calls) == 3:
            key = sorted(logs)[0]
            logs[key] = torch.tensor(float("nan"))
            with torch.no_grad():  # and the weights go bad, as they would
                next(state.nets.generator.parameters()).fill_(float("nan"))
        return logs

    monkeypatch.setattr(LOOPS[arch], step_name, step)
    with pytest.raises(TrainingFailed) as err:
        train(config(demo_data, "train.total_iters=10", "train.log_every=5"), tmp_path, show_progress=False)
    message = str(err.value)
    assert "non-finite loss at step 3" in message and "step-000002" in message
    assert "train.stop_on_nonfinite=false" in message
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-000002"]


def test_non_finite_losses_can_be_trained_through_when_asked(demo_data, tmp_path, monkeypatch, capsys):
    config, train, step_name = ARCHS["v2"]
    real_step = v2_loop.train_step

    def step(state, *args, **kwargs):
        logs = real_step(state, *args, **kwargs)
        logs["G/latent_adv"] = torch.tensor(float("inf"))
        return logs

    monkeypatch.setattr(v2_loop, "train_step", step)
    train(config(demo_data, "train.total_iters=2", "train.stop_on_nonfinite=false"), tmp_path,
          show_progress=False)
    assert "non-finite loss at step 1: G/latent_adv" in capsys.readouterr().out
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-000002"]


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_says_so_in_one_line(demo_data, tmp_path,
                                                                                  monkeypatch, capsys):
    real_save = checkpoints.save_file
    calls = []

    def disk_full(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            real_save(tensors, filename, metadata=metadata)  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoints, "save_file", disk_full)
    args = ["train", "--preset", "demo", "--data", str(demo_data), "--run-dir", str(tmp_path / "run"),
            "--no-progress", *tiny.as_cli_flags(tiny.V2 + [NO_SAMPLES, "train.total_iters=6"])]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "cannot write checkpoint" in err and "No space left on device" in err
    assert "previous checkpoint step-000002 is intact" in err
    ckpts = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["step-000002"]  # no temporary directory left
    config, nets = checkpoints.load_for_sampling(tmp_path / "run")
    assert config.train.total_iters == 6 and nets.generator is not None


def test_scalars_after_the_resumed_step_are_dropped_from_the_log(demo_data, tmp_path):
    config, train, _ = ARCHS["v2"]
    train(config(demo_data, "train.total_iters=4"), tmp_path, show_progress=False)
    # as if the process had died after logging steps 3 and 4 but before saving step 4
    checkpoints.remove_tree(checkpoint_dirs(tmp_path)[-1])
    with open(tmp_path / "logs" / "scalars.jsonl", "a") as fh:
        fh.write('{"step": 5, "D/latent_real"')  # a line cut short
    train(load_config_yaml(tmp_path / "config.yaml"), tmp_path, resume=True, show_progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "logs" / "scalars.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_second_process_cannot_train_the_same_run(demo_data, tmp_path):
    from stargan.training.runner import run_lock

    with run_lock(tmp_path):
        config, train, _ = ARCHS["v2"]
        with pytest.raises(ValueError, match=f"being trained already, by this process \\(pid {os.getpid()}\\)"):
            train(config(demo_data, "train.total_iters=1"), tmp_path, show_progress=False)


HOLD_AND_FORK = """
import os, sys, time
from pathlib import Path
from stargan.training.runner import run_lock
with run_lock(Path(sys.argv[1])):
    if os.fork() == 0:  # a child that outlives its parent, as a data-loader worker does for a while
        time.sleep(30)
        os._exit(0)
    print("locked", flush=True)
    time.sleep(60)
"""


def test_another_process_holding_the_lock_is_refused_and_its_kill_frees_the_lock_at_once(tmp_path):
    """The lock belongs to the training process alone: a forked child (data-loader worker) that lives on
    after ``kill -9`` of its parent does not keep an immediate ``--resume`` out."""
    import subprocess
    import sys

    from stargan.training.runner import run_lock

    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"being trained by another process \\(pid {holder.pid}\\)"):
            with run_lock(tmp_path):
                pass
        holder.kill()
        holder.wait()
        with run_lock(tmp_path):  # at once: the child still lives (sleeping), the lock died with its parent
            # (read by another process: closing any descriptor of the file in this one would drop the lock)
            assert subprocess.check_output(["cat", str(tmp_path / ".lock")], text=True) == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()
