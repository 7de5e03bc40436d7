"""The benchmarks the README shows run, on tiny settings, and print what they promise."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_train_step_prints_ratios_flops_memory_and_phase_shares():
    out = run("train_step.py", "--preset", "demo", "--img-size", "0", "--domains", "0", "--batch", "2",
              "--iters", "1", "--warmup", "0", "--variants", "plain,exact", "--flops")
    assert re.search(r"exact\s+[\d.]+ s/iter .* x[\d.]+ vs plain", out)
    # The exact mode's shared passes do less convolution work than the phases as written.
    share = float(re.search(r"exact\s+[\d.]+ GFLOP/iter\s+[\d.]+ GFLOP/s\s+\(([\d.]+) of plain's\)", out)[1])
    assert 0.5 < share < 1.0
    peaks = dict(re.findall(r"(plain|exact)\s+peak\s+(\d+) MB", out))
    assert set(peaks) == {"plain", "exact"} and all(int(v) > 0 for v in peaks.values())
    assert re.search(r"plain\s+D/latent\s+[\d.]+% .* backward\s+[\d.]+%", out)


def test_eval_speed_compares_the_extractor_with_its_d58d7a9_form():
    out = run("eval_speed.py", "--preset", "demo", "--batch", "20", "--batches", "1")
    assert re.search(r"inception-tf features\s+[\d.]+ images/s", out)
    assert "of which the resize to 299" in out
    rel = float(re.search(r"features differ by ([\d.e+-]+) relative", out)[1])
    assert rel < 1e-4
