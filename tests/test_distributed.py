"""Data-parallel training under torchrun (gloo on CPU): gradient averaging is exact."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from stargan.config import LossConfig, OptimConfig
from stargan.nets.v2 import build_networks
from stargan.state import make_train_state
from stargan.training.v2.step import train_step

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent('''
    import sys, torch
    from stargan.config import OptimConfig, LossConfig
    from stargan.distributed import init_from_env
    from stargan.nets.v2 import build_networks
    from stargan.training.v2.step import train_step
    from stargan.state import make_train_state
    sys.path.insert(0, sys.argv[2])
    from test_distributed_batches import MODEL, batch_for
    world = init_from_env()
    torch.manual_seed(0)
    state = make_train_state(build_networks(MODEL).to(torch.float64), OptimConfig(), world.world_size)
    for step in range(2):
        train_step(state, batch_for(step, world.rank), LossConfig(), 0.999)
    torch.save({k: v for k, v in state.nets.generator.state_dict().items()} |
               {"D." + k: v for k, v in state.nets.discriminator.state_dict().items()},
               f"{sys.argv[1]}/rank{world.rank}.pt")
''')

BATCHES = textwrap.dedent('''
    import torch
    from stargan.config import ModelConfig
    MODEL = ModelConfig(img_size=16, num_domains=2, latent_dim=4, style_dim=8, hidden_dim=16,
                        max_conv_dim=16, base_dim=8, w_hpf=0)

    def batch_for(step, rank, size=2):
        g = torch.Generator().manual_seed(100 * step + rank)
        x = lambda: torch.rand(size, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
        y = lambda: torch.randint(0, 2, (size,), generator=g)
        z = lambda: torch.randn(size, 4, generator=g, dtype=torch.float64)
        return {"x_real": x(), "y_org": y(), "x_ref": x(), "x_ref2": x(), "y_trg": y(),
                "z_trg": z(), "z_trg2": z()}
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_two_processes_equal_one_step_on_the_joined_batch(tmp_path):
    (tmp_path / "test_distributed_batches.py").write_text(BATCHES)
    (tmp_path / "worker.py").write_text(WORKER)
    result = torchrun(str(tmp_path / "worker.py"), str(tmp_path), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)

    sys.path.insert(0, str(tmp_path))
    try:
        from test_distributed_batches import MODEL, batch_for
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    state = make_train_state(build_networks(MODEL).to(torch.float64), OptimConfig())
    for step in range(2):
        parts = [batch_for(step, 0), batch_for(step, 1)]
        joined = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        train_step(state, joined, LossConfig(), 0.999)
    single = {**state.nets.generator.state_dict(),
              **{"D." + k: v for k, v in state.nets.discriminator.state_dict().items()}}
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), key  # ranks stay in lockstep
        torch.testing.assert_close(rank0[key], value, rtol=1e-9, atol=1e-9, msg=key)


def test_torchrun_cli_writes_one_run(tmp_path):
    from stargan.data.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", img_size=16, train_per_domain=4, val_per_domain=2)
    tiny = ["model.img_size=16", "model.latent_dim=4", "model.style_dim=8", "model.hidden_dim=16",
            "model.max_conv_dim=16", "model.base_dim=8", "data.batch_size=2", "data.num_workers=0",
            "train.total_iters=2", "train.sample_every=2", "train.save_every=2", "train.num_samples=3"]
    sets = [arg for item in tiny for arg in ("--set", item)]
    result = torchrun("-m", "stargan.cli", "train", "--preset", "demo", "--data", str(data),
                      "--runs", str(tmp_path / "runs"), "--no-progress", *sets)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["00000-demo"]
    run = tmp_path / "runs" / "00000-demo"
    assert (run / "checkpoints" / "step-000002" / "networks.safetensors").is_file()
    assert result.stdout.count("run directory:") == 1


SLOW_EVAL = textwrap.dedent('''
    import sys, time
    from datetime import timedelta
    from pathlib import Path
    import torch.distributed as dist
    from stargan.config import Config
    from stargan.distributed import init_from_env
    from stargan.training.v2 import loop

    # the default group gets a short timeout, shorter than the evaluation below
    dist.init_process_group(backend="gloo", timeout=timedelta(seconds=6))
    world = init_from_env()
    def slow_evaluation(state, config, run_dir, log, show_progress, mask_fn=None):
        if state.step == 2:  # mid-run: step 3's gradient all-reduce comes next
            time.sleep(15)
        return Path(run_dir) / "metrics" / "fake.json"
    loop.evaluate_and_log = slow_evaluation
    config = Config().with_overrides(sys.argv[3:])
    if sys.argv[2] == "no-wait":  # the check has teeth: without the waits the job dies
        import stargan.training.runner as runner
        runner.wait_for_main = lambda world: None
        runner.any_rank = lambda flag, world: flag  # the per-iteration stop vote also waits, on the same group
    loop.train(config, Path(sys.argv[1]), show_progress=False, world=world)
    # a marker file per rank: the two ranks' stdout lines can interleave in the shared pipe
    (Path(sys.argv[1]).parent / f"finished-{world.rank}").touch()
''')


@pytest.mark.parametrize("wait", ["wait", "no-wait"])
def test_a_slow_evaluation_on_rank_0_does_not_trip_the_collective_timeout(tmp_path, wait):
    from stargan.data.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", img_size=16, train_per_domain=4, val_per_domain=2)
    (tmp_path / "worker.py").write_text(SLOW_EVAL)
    tiny = ["model.img_size=16", "model.latent_dim=4", "model.style_dim=8", "model.hidden_dim=16",
            "model.max_conv_dim=16", "model.base_dim=8", "model.w_hpf=0", "data.batch_size=2",
            "data.num_workers=0", "train.total_iters=3", "train.sample_every=100", "train.save_every=100",
            "train.num_samples=3", f"data.root={data}", "eval.every=2", "eval.backbone=none",
            "eval.lpips=false"]
    result = torchrun(str(tmp_path / "worker.py"), str(tmp_path / "run"), wait, *tiny)
    if wait == "wait":
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / "finished-0").is_file() and (tmp_path / "finished-1").is_file()
    else:
        assert result.returncode != 0
