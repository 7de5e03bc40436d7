"""Seconds per StarGAN v2 training iteration: today's step, exact mode and fast mode, from one run.

    python benchmarks/train_step.py                                   # the issue's configuration:
        # paper widths (afhq preset), 64 px, batch 4, 2 domains; fast mode = bf16 (+ --channels-last, --compile)
    python benchmarks/train_step.py --preset cpu --batch 8 --img-size 0 --domains 0 --iters 5

Variants (each its own networks from the same seed, on the same random batch; timed in turns, one
iteration of each per round, so that a busy machine slows them alike):
    plain    every phase as written, fp32: the paper-form step of tests/training/v2/reference_step.py
             (skipping discarded gradients), the step of main at d58d7a9
    autocast the same step inside a plain ``torch.autocast`` (what a user would add)
    exact    the default step (shared passes, fp32): equal to plain within rounding
    unshared the step with train.shared_passes=false (fp32): each phase makes its own fakes
    fast     shared passes + --precision (bf16) [+ channels_last] [+ compile]
    compiled fast with torch.compile whatever --compile says (fast and compiled side by side)
Peak memory: each variant in a subprocess: its resident set after building the networks, and its peak
resident set during one iteration (Linux: VmRSS and VmHWM of /proc/self/status, the peak reset after the
build; getrusage's ru_maxrss would carry over the parent's peak across fork/exec), or
torch.cuda.max_memory_allocated (CUDA).
FLOPs (--flops): one more iteration of each variant, counted with torch.utils.flop_counter's formulas
(matrix multiplications and convolutions, forward and backward, R1's double backward included; the
compiled variant is counted eagerly), and the rate each variant reached: the convolution work a
variant removes bounds what it can gain.
Phase shares: the last timed round runs under torch.profiler (the step's record_function labels);
its overhead is small next to these convolutions and the same for every variant.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from stargan.config import load_preset
from stargan.nets.v2 import build_networks
from stargan.state import make_train_state
from stargan.training.v2 import probe
from stargan.training.v2.speed import Speed, prepare_networks
from stargan.training.v2.step import train_step

# the paper-form step lives with the tests, as their float64 reference (a file: site-packages may hold
# another package named `tests`)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "training" / "v2"))
from reference_step import reference_step

PHASES = ("D/latent", "D/ref", "G/latent", "G/ref", "EMA")


def random_batch(cfg, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The speed probe's random batch (same draws): the benchmark times what `auto` measures."""
    return probe.random_batch(cfg.model, batch, device)


def make_variant(name: str, cfg, args, device: torch.device):
    """(state, step function) of a variant."""
    torch.manual_seed(0)
    state = make_train_state(build_networks(cfg.model).to(device), cfg.optim)
    speed = None  # plain, autocast: the reference step
    if name in ("exact", "unshared"):
        speed = Speed(shared_passes=name == "exact", device_type=device.type)
    elif name in ("fast", "compiled"):
        speed = Speed(precision=args.precision, channels_last=args.channels_last, device_type=device.type)
        prepare_networks(state.nets, speed, compile_nets=args.compile or name == "compiled")
    dtype = torch.float16 if args.precision == "fp16" else torch.bfloat16  # fp32 (fast without autocast): bf16
    wrap = ((lambda: torch.autocast(device.type, dtype=dtype)) if name == "autocast"
            else contextlib.nullcontext)

    def step(batch):
        with wrap():
            if speed is None:
                return reference_step(state, batch, cfg.loss, cfg.optim.ema_beta, skip_discarded=True)
            return train_step(state, batch, cfg.loss, cfg.optim.ema_beta, speed=speed)

    return state, step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def profiler(device: torch.device, enabled: bool):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=activities) if enabled else contextlib.nullcontext()


def phase_shares(prof) -> dict[str, float]:
    """Shares of one iteration's time: per phase, and forward / backward / R1 / optimizer."""
    times = {e.key: e.cpu_time_total for e in prof.key_averages()}
    phases = {p: times.get(f"phase {p}", 0.0) for p in PHASES}
    total = sum(phases.values()) or 1.0
    parts = {"R1": times.get("R1", 0.0), "backward": times.get("backward", 0.0),
             "optimizer": times.get("optimizer", 0.0)}
    parts["forward"] = total - sum(parts.values()) - phases["EMA"]
    return {**{p: v / total for p, v in phases.items()}, **{k: v / total for k, v in parts.items()}}


class _FlopCount(TorchDispatchMode):
    """FLOPs of the aten ops torch.utils.flop_counter knows (convolutions, their backward, matrix
    products), without FlopCounterMode's module hooks, which autograd.grad (R1) does not allow."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **(kwargs or {}), out_val=out)
        return out


def count_flops(step, batch, eager: bool = False) -> int:
    """FLOPs of one iteration of ``step`` (``eager``: with torch.compile's graphs run eagerly)."""
    disable = torch._dynamo.config.patch(disable=True) if eager else contextlib.nullcontext()
    with disable, _FlopCount() as counter:
        step(batch)
    return counter.flops


def config_of(args):
    cfg = load_preset(args.preset)
    model = {}
    if args.img_size:
        model["img_size"] = args.img_size
    if args.domains:
        model["num_domains"] = args.domains
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model))
    return cfg.with_overrides(args.set)


def _status_mb(field: str) -> float | None:
    """``VmRSS`` or ``VmHWM`` of this process in MB (None without /proc)."""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def _reset_peak_rss() -> bool:
    """Start VmHWM again from the current resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def memory_of(variant: str, args) -> dict[str, float]:
    """Peak memory of one iteration of ``variant`` (the first: Adam's moments are allocated in it for
    every variant alike), measured in this (fresh) process."""
    device = torch.device(args.device)
    cfg = config_of(args)
    batch = random_batch(cfg, args.batch, device)
    _, step = make_variant(variant, cfg, args, device)
    built = _status_mb("VmRSS") if _reset_peak_rss() else None
    proc = built is not None
    if not proc:
        built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step(batch)
    sync(device)
    peak = _status_mb("VmHWM") if proc else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"built_mb": built, "peak_mb": peak, "step_mb": peak - built}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="afhq", help="widths of this preset (afhq: the paper's)")
    parser.add_argument("--img-size", type=int, default=64, help="0: the preset's")
    parser.add_argument("--domains", type=int, default=2, help="0: the preset's")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=2, help="timed rounds (one iteration of each variant)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"],
                        help="of the fast mode (fp32: channels_last / compile alone, for CPUs without native bf16; "
                             "the autocast variant then stays bf16)")
    parser.add_argument("--channels-last", action="store_true", help="fast mode: channels_last")
    parser.add_argument("--compile", action="store_true", help="fast mode: torch.compile")
    parser.add_argument("--variants", default="plain,autocast,exact,fast",
                        help="comma-separated: plain, autocast, exact, unshared, fast, compiled")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as for `stargan train` (e.g. model.g_downsamples=2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-profile", action="store_true", help="skip the phase shares")
    parser.add_argument("--flops", action="store_true", help="count each variant's FLOPs per iteration")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: one variant's peak memory
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(memory_of(args.memory_of, args)))
        return

    device = torch.device(args.device)
    cfg = config_of(args)
    names = args.variants.split(",")
    batch = random_batch(cfg, args.batch, device)
    variants = {name: make_variant(name, cfg, args, device)[1] for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    shares = {}
    rounds = args.warmup + args.iters
    for round_ in range(rounds):
        for name, step in variants.items():
            profiled = round_ == rounds - 1 and not args.no_profile
            with profiler(device, profiled) as prof:
                sync(device)
                start, cpu_start = time.perf_counter(), time.process_time()
                step(batch)
                sync(device)
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if round_ >= args.warmup:
                times[name].append(elapsed)
                cpu_times[name].append(cpu)
            if profiled:
                shares[name] = phase_shares(prof)
    median = {name: statistics.median(t) for name, t in times.items() if t}
    cpu_median = {name: statistics.median(t) for name, t in cpu_times.items() if t}

    fast = f"{args.precision}" + (" + channels_last" if args.channels_last else "") + (
        " + compile" if args.compile else "")
    m = cfg.model
    print(f"preset={args.preset} {' '.join(args.set)} (widths base {m.first_dim}, max {m.max_conv_dim}) "
          f"img_size={m.img_size} domains={m.num_domains} w_hpf={m.w_hpf} batch={args.batch} device={device} "
          f"threads={torch.get_num_threads()} rounds={args.iters} after {args.warmup} warm-up; fast = {fast}")
    base, cpu_base = median.get("plain"), cpu_median.get("plain")
    if median:
        print("wall-clock s/iter, and the process's CPU seconds per iteration (what a shared, busy machine "
              "cannot inflate much; with one thread the better measure of work):")
    for name in median:
        ratio = f"  x{base / median[name]:.2f} vs plain" if base else ""
        cpu_ratio = f"  x{cpu_base / cpu_median[name]:.2f} vs plain" if cpu_base else ""
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        print(f"  {name:9s} {median[name]:8.3f} s/iter (range {spread}){ratio}   "
              f"CPU {cpu_median[name]:8.3f} s/iter{cpu_ratio}")
    for ref, new in (("autocast", "fast"), ("exact", "fast"), ("exact", "compiled"), ("fast", "compiled")):
        if ref in median and new in median:
            print(f"  {new} vs {ref}: x{median[ref] / median[new]:.2f} wall, "
                  f"x{cpu_median[ref] / cpu_median[new]:.2f} CPU")

    if args.flops:
        print("FLOPs of one iteration (torch.utils.flop_counter: convolutions and matrix products, forward and "
              "backward) and the rate reached:")
        flops = {name: count_flops(step, batch, eager=name == "compiled") for name, step in variants.items()}
        for name, count in flops.items():
            print(f"  {name:9s} {count / 1e9:9.1f} GFLOP/iter  {count / 1e9 / median[name]:7.1f} GFLOP/s"
                  + (f"  ({count / flops['plain']:.3f} of plain's)" if "plain" in flops and name != "plain"
                     else ""))

    sys.stdout.flush()
    if not args.no_memory:
        how = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak resident set of a fresh process"
        print(f"peak memory ({how}; 'step' = peak minus resident after building the networks):")
        for name in names:
            cmd = [sys.executable, __file__, "--memory-of", name] + [
                a for a in sys.argv[1:] if a not in ("--memory-of",)]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            cuda = f", cuda {out['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in out else ""
            print(f"  {name:9s} peak {out['peak_mb']:7.0f} MB, step {out['step_mb']:7.0f} MB{cuda}")

    if shares:
        print("shares of the last (profiled) iteration: phases; forward/backward/R1/optimizer (R1 = the "
              "gradient pass w.r.t. the real images; its second-order part is in backward):")
        for name in names:
            print(f"  {name:9s} " + " ".join(f"{k} {100 * v:4.1f}%" for k, v in shares[name].items()))


if __name__ == "__main__":
    main()
