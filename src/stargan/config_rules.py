"""What every config field may hold: one rule per field of every section of :mod:`stargan.config`.

A rule takes the value and returns ``None`` when it is allowed, else the allowed range as text
(``">= 1"``, ``"one of latent, reference, both"``), which the config error prints next to the value.
Every field has a rule (a test checks it), so a new field cannot be added without saying what it allows.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

Rule = Callable[[Any], "str | None"]


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float) -> Rule:
    return lambda v: None if _numeric(v) and v >= low else f">= {low}"


def above(low: float) -> Rule:
    return lambda v: None if _numeric(v) and v > low else f"> {low}"


def within(low: float, high: float, high_open: bool = False) -> Rule:
    text = f"in [{low}, {high})" if high_open else f"in [{low}, {high}]"
    return lambda v: (None if _numeric(v) and low <= v and (v < high if high_open else v <= high)
                      else text)


def one_of(*choices: str) -> Rule:
    return lambda v: None if v in choices else f"one of {', '.join(choices)}"


def power_of_two(low: int, high: int) -> Rule:
    def rule(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and low <= v <= high and v & (v - 1) == 0
        return None if ok else f"a power of two in [{low}, {high}]"
    return rule


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def boolean_or_auto(v: Any) -> str | None:
    return None if isinstance(v, bool) or v == "auto" else "true, false or auto"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def names(v: Any) -> str | None:
    """A tuple of distinct, non-empty names (empty tuple: filled in when a run starts)."""
    ok = (isinstance(v, tuple) and all(isinstance(n, str) and n.strip() for n in v)
          and len(set(v)) == len(v))
    return None if ok else "distinct non-empty names"


def device(v: Any) -> str | None:
    ok = isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v)
    return None if ok else "auto, cpu, mps, cuda or cuda:N"


def empty_or(rule: Rule) -> Rule:
    return lambda v: None if v == "" or rule(v) is None else f"empty or {rule(v)}"


def sha256(v: Any) -> str | None:
    ok = v == "" or (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v))
    return None if ok else "empty or 64 lowercase hex digits"


def new_heads(v: Any) -> str | None:
    """``NAME=mean``, ``NAME=half:OTHER`` or ``NAME=copy:OTHER`` for each new domain of a run started from a
    trained model."""
    ok = isinstance(v, tuple) and all(isinstance(e, str) and re.fullmatch(r"[^=]+=(mean|(half|copy):.+)", e)
                                      for e in v)
    return None if ok else "NAME=mean, NAME=half:DOMAIN or NAME=copy:DOMAIN items"


INTERVAL = at_least(1)          # every N iterations
COUNT = at_least(1)
NON_NEGATIVE = at_least(0)
ADAM_BETA = within(0, 1, high_open=True)

_TRAIN_RULES: dict[str, Rule] = {  # both versions
    "total_iters": COUNT, "seed": within(0, 2**32 - 1), "device": device, "log_every": INTERVAL,
    "sample_every": INTERVAL, "save_every": INTERVAL, "keep_last": NON_NEGATIVE, "num_samples": COUNT,
    "stop_on_nonfinite": boolean,
}

RULES: dict[str, dict[str, Rule]] = {
    "ModelConfig": {
        "img_size": power_of_two(16, 1024), "num_domains": COUNT, "latent_dim": COUNT, "style_dim": COUNT,
        "hidden_dim": COUNT, "max_conv_dim": COUNT, "base_dim": NON_NEGATIVE, "w_hpf": NON_NEGATIVE,
        "g_downsamples": within(0, 10), "g_out_norm": boolean, "g_skips": boolean, "g_skip_full": boolean,
        "g_residual": boolean, "masks": boolean, "fan_weights": text,
    },
    "LossConfig": {
        "lambda_reg": NON_NEGATIVE, "lambda_sty": NON_NEGATIVE, "lambda_ds": NON_NEGATIVE,
        "lambda_cyc": NON_NEGATIVE, "lambda_id": NON_NEGATIVE,
        "ds_iter": NON_NEGATIVE,
    },
    "OptimConfig": {
        "lr": above(0), "mapping_lr": above(0), "beta1": ADAM_BETA, "beta2": ADAM_BETA,
        "weight_decay": NON_NEGATIVE, "ema_beta": within(0, 1, high_open=True), "ema_warmup": boolean,
    },
    "DataConfig": {
        "root": text, "domains": names, "batch_size": COUNT, "num_workers": NON_NEGATIVE,
        "crop_prob": within(0, 1), "skip_bad_images": boolean,
    },
    "V1TrainConfig": _TRAIN_RULES,
    "TrainConfig": {
        **_TRAIN_RULES,
        "psi": NON_NEGATIVE, "precision": one_of("fp32", "bf16", "fp16", "auto"),
        "channels_last": boolean_or_auto, "compile": boolean_or_auto, "shared_passes": boolean,
        "augment": one_of("none", "diffaugment", "ada"), "ada_target": within(0, 1), "ada_kimg": above(0),
        "ada_interval": INTERVAL,
    },
    "EvalConfig": {
        "every": NON_NEGATIVE, "mode": one_of("latent", "reference", "both"),
        "num_outs": at_least(2),  # LPIPS compares pairs of a source's outputs
        "max_inputs": NON_NEGATIVE, "backbone": one_of("inception-tf", "inception-torchvision", "none"),
        "weights": text, "lpips": boolean, "lpips_weights": text, "trust_weights": boolean,
        "classifier": text, "batch_size": COUNT,
    },
    "InitConfig": {
        "path": text, "step": NON_NEGATIVE, "sha256": sha256, "discriminator": empty_or(one_of("parent", "fresh")),
        "kept": names, "new": new_heads, "dropped": names,
    },
    "V1ModelConfig": {
        "img_size": within(4, 2048), "c_dim": COUNT, "c2_dim": NON_NEGATIVE, "g_conv_dim": COUNT,
        "d_conv_dim": COUNT, "g_repeat_num": NON_NEGATIVE, "d_repeat_num": within(1, 10),
    },
    "V1LossConfig": {"lambda_cls": NON_NEGATIVE, "lambda_rec": NON_NEGATIVE, "lambda_gp": NON_NEGATIVE},
    "V1OptimConfig": {
        "g_lr": above(0), "d_lr": above(0), "beta1": ADAM_BETA, "beta2": ADAM_BETA, "n_critic": COUNT,
        "decay_start": NON_NEGATIVE,
    },
    "V1DataConfig": {
        "mode": one_of("celeba", "folders", "both"), "root": text, "attr_file": text, "attrs": names,
        "exclusive": names, "test_size": NON_NEGATIVE, "rafd_root": text, "domains": names,
        "crop_size": NON_NEGATIVE, "rafd_crop_size": NON_NEGATIVE, "flip": boolean, "batch_size": COUNT,
        "num_workers": NON_NEGATIVE, "skip_bad_images": boolean,
    },
}
