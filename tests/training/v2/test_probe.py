"""``auto`` speed settings: the bf16 rule, the child-process probe, its cache and the choice."""
from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch

from stargan import hardware
from stargan.config import load_preset
from stargan.training.v2 import probe
from stargan.training.v2.probe import Candidate, Measured, choose, resolve_precision, resolve_speed, run_probe

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def cpu_with(monkeypatch, avx512_bf16: bool, amx: bool = False, cap: str | None = None) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)


def test_auto_precision_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch):
    cpu_with(monkeypatch, avx512_bf16=False)
    precision, said, warning = resolve_precision("auto", CPU)
    assert precision == "fp32" and warning is None
    assert said.startswith("precision: fp32 (auto: this CPU has no native bf16")
    cpu_with(monkeypatch, avx512_bf16=True)
    assert resolve_precision("auto", CPU)[:2] == ("bf16", "precision: bf16 (auto: this CPU has native "
                                                          "bf16: avx512_bf16)")
    cpu_with(monkeypatch, avx512_bf16=False, amx=True)
    assert resolve_precision("auto", CPU)[0] == "bf16"
    cpu_with(monkeypatch, avx512_bf16=True, cap="AVX512_CORE_VNNI")  # oneDNN capped below bf16
    precision, said, _ = resolve_precision("auto", CPU)
    assert precision == "fp32" and "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI" in said
    cpu_with(monkeypatch, avx512_bf16=True, cap="avx512_core_amx")
    assert resolve_precision("auto", CPU)[0] == "bf16"


def test_explicit_bf16_on_an_emulating_cpu_runs_as_asked_with_a_warning(monkeypatch):
    cpu_with(monkeypatch, avx512_bf16=False)
    precision, said, warning = resolve_precision("bf16", CPU)
    assert precision == "bf16" and said is None
    assert "emulated here and slower than fp32" in warning and "auto would pick fp32" in warning
    cpu_with(monkeypatch, avx512_bf16=True)
    assert resolve_precision("bf16", CPU) == ("bf16", None, None)
    assert resolve_precision("fp32", CPU) == ("fp32", None, None)


def test_choose_prefers_less_machinery_unless_it_is_clearly_faster():
    plain, nhwc = Candidate(False, False), Candidate(True, False)
    compiled = Candidate(True, True)
    assert choose([Measured(plain, 1.0), Measured(nhwc, 0.97), Measured(compiled, 0.93)]) == plain
    assert choose([Measured(plain, 1.0), Measured(nhwc, 0.90), Measured(compiled, 0.93)]) == nhwc
    assert choose([Measured(plain, 1.0), Measured(nhwc, 0.90), Measured(compiled, 0.70)]) == compiled
    assert choose([Measured(plain, 1.0), Measured(compiled, None, "non-finite")]) == plain
    assert choose([Measured(compiled, None, "crashed")]) is None


def small_config(**train):
    config = load_preset("cpu-small")
    return dataclasses.replace(config, model=dataclasses.replace(config.model, num_domains=3),
                               train=dataclasses.replace(config.train, **train))


def test_resolve_speed_measures_once_then_reads_the_cache(monkeypatch, capsys):
    cpu_with(monkeypatch, avx512_bf16=False)
    calls = []

    def fake_probe(request):
        calls.append(request)
        times = {(False, False): 1.0, (True, False): 1.2, (False, True): 0.5, (True, True): 0.6}
        return [Measured(Candidate(**c), times[c["channels_last"], c["compile"]]) for c in request["candidates"]]

    config, lines, warns = resolve_speed(small_config(), CPU, probe=fake_probe)
    assert (config.train.precision, config.train.channels_last, config.train.compile) == ("fp32", False, True)
    assert len(calls) == 1 and len(calls[0]["candidates"]) == 4 and calls[0]["precision"] == "fp32"
    assert calls[0]["model"]["num_domains"] == 3 and calls[0]["batch_size"] == 8
    assert capsys.readouterr().out.startswith("precision: fp32 (auto: this CPU has no native bf16")
    assert len(lines) == 1 and "contiguous+compile 0.500 s/it" in lines[0]
    assert lines[0].endswith("-> channels_last=false, compile=true") and warns == []
    again, lines, _ = resolve_speed(small_config(), CPU, probe=fake_probe)
    assert again == config and len(calls) == 1 and "cached" in lines[0]
    # another shape is another question
    resolve_speed(dataclasses.replace(small_config(), data=dataclasses.replace(config.data, batch_size=4)),
                  CPU, probe=fake_probe)
    assert len(calls) == 2


def test_settings_given_explicitly_are_not_measured(monkeypatch):
    cpu_with(monkeypatch, avx512_bf16=False)

    def no_probe(request):
        raise AssertionError("probed")

    config, lines, warns = resolve_speed(small_config(precision="bf16", channels_last=True, compile=False),
                                         CPU, probe=no_probe)
    assert (config.train.precision, config.train.channels_last, config.train.compile) == ("bf16", True, False)
    assert lines == [] and len(warns) == 1 and "emulated" in warns[0]


def test_an_explicit_compile_that_fails_its_probe_runs_eagerly_with_a_warning(monkeypatch):
    cpu_with(monkeypatch, avx512_bf16=True)

    def crashed(request):
        return [Measured(Candidate(**c), None, "the probe process died (signal 11)")
                for c in request["candidates"]]

    config, lines, warns = resolve_speed(small_config(precision="bf16", channels_last=True, compile=True),
                                         CPU, probe=crashed)
    assert (config.train.channels_last, config.train.compile) == (True, False)
    assert len(warns) == 1 and "signal 11" in warns[0] and "eagerly" in warns[0]


CRASH_ON_COMPILE = """
import json, os, signal, sys
request = json.loads(sys.stdin.read())
if any(c["compile"] for c in request["candidates"]):
    print(json.dumps({"candidate": request["candidates"][0], "seconds": 9.0, "problem": ""}), flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
for c in request["candidates"]:
    print(json.dumps({"candidate": c, "seconds": 1.0 + c["channels_last"], "problem": ""}))
"""


def test_a_compiler_crash_kills_the_probe_child_not_the_run_and_eager_is_measured_again():
    request = {"candidates": [dataclasses.asdict(c) for c in
                              (Candidate(False, False), Candidate(True, False), Candidate(False, True))]}
    measured = run_probe(request, command=[sys.executable, "-c", CRASH_ON_COMPILE])
    by = {m.candidate: m for m in measured}
    assert by[Candidate(False, False)].seconds == 9.0  # reported before the crash: kept
    assert by[Candidate(True, False)].seconds == 2.0   # lost in the crash: measured again, no compiler
    assert by[Candidate(False, True)].seconds is None and "signal 11" in by[Candidate(False, True)].problem
    assert choose(measured) == Candidate(True, False)


def test_the_real_probe_times_eager_candidates_on_the_run_shapes():
    config = small_config(channels_last="auto", compile=False)
    request = {"model": dataclasses.asdict(config.model), "loss": dataclasses.asdict(config.loss),
               "batch_size": 2, "device": "cpu", "precision": "fp32", "threads": 1, "iters": 1,
               "candidates": [dataclasses.asdict(c) for c in probe.candidates(config.train)]}
    measured = run_probe(request)
    assert [m.candidate for m in measured] == [Candidate(False, False), Candidate(True, False)]
    assert all(m.seconds is not None and 0 < m.seconds < 30 and m.problem == "" for m in measured), measured
    json.dumps([m.seconds for m in measured])


def test_machine_key_follows_the_isa_caps(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    plain = hardware.machine_key()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert hardware.machine_key() != plain
