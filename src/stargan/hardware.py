"""What this machine runs natively: the facts behind the ``auto`` speed settings.

bf16 is native on CUDA devices that report it (Ampere and newer) and on CPUs with AVX512_BF16 or AMX
(Intel Cooper Lake and Sapphire Rapids on, AMD Zen 4 on). Elsewhere torch emulates it: a bf16
convolution then runs at about a third of fp32's rate (57 against 153 GFLOP/s measured on an
AVX512-VNNI Xeon without AVX512_BF16), so bf16 is slower than fp32 there.

``ONEDNN_MAX_CPU_ISA`` (oneDNN's own cap, read when it starts) below ``AVX512_CORE_BF16`` makes oneDNN
emulate bf16 on any CPU, so it counts as "not native" too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

# oneDNN's ISA names from which bf16 dot products are native (its documented order)
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                     "AVX10_2_512_AMX_2", "DEFAULT", "ALL")


@dataclass(frozen=True)
class Bf16Support:
    native: bool
    reason: str     # said after the choice: "precision: fp32 (this CPU has no native bf16: ...)"


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it ("" where /proc/cpuinfo has none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() or "CPU"


def bf16_support(device: torch.device | str) -> Bf16Support:
    """Whether ``device`` computes bf16 natively, and why (or why not)."""
    device = torch.device(device)
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device)
        return Bf16Support(native, f"{name} {'has' if native else 'has no'} native bf16")
    if device.type != "cpu":
        return Bf16Support(False, f"no bf16 rule for {device.type} devices")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    avx512_bf16, amx = torch.cpu._is_avx512_bf16_supported(), torch.cpu._is_amx_tile_supported()
    if not (avx512_bf16 or amx):
        return Bf16Support(False, "this CPU has no native bf16: no avx512_bf16 or AMX, torch would "
                                  "emulate it at about a third of fp32's speed")
    if cap and cap not in _ONEDNN_BF16_ISAS:
        return Bf16Support(False, f"ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN below AVX512_CORE_BF16: "
                                  "bf16 would be emulated")
    return Bf16Support(True, "this CPU has native bf16: " + " and ".join(
        name for name, has in (("avx512_bf16", avx512_bf16), ("AMX", amx)) if has))


ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def machine_key(device: torch.device | str = "cpu") -> str:
    """A short hash of what compiled code depends on: torch's version, the device model and its bf16
    support, the ISA caps in the environment."""
    import hashlib

    device = torch.device(device)
    facts = [torch.__version__, describe(device), *(f"{k}={os.environ.get(k, '')}" for k in ISA_VARIABLES)]
    if device.type == "cpu":
        facts.append(str(torch.backends.cpu.get_cpu_capability()))
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def describe(device: torch.device | str = "cpu") -> str:
    """One line naming the device and its bf16 support, printed beside every speed figure."""
    device = torch.device(device)
    return f"{device_name(device)}, torch {torch.__version__}, {bf16_support(device).reason}"
