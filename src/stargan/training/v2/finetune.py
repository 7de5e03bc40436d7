"""A new StarGAN v2 run that starts from a trained model, the parent (``stargan train --init-from``): a run or
checkpoint of ours, or an imported release (``stargan import-official``).

- The model section is the parent's: a preset's is replaced, a ``--set`` that would change the networks'
  shapes is refused (``masks`` and ``fan_weights`` may be set). The domains, their count and their order
  are the new data's, as for a new run.
- Domains are matched by name. A domain of both keeps its heads (F's and E's unshared heads, D's output
  row); a domain only the parent has is dropped; a domain only the data has gets new heads: a copy of a
  parent domain's (``--init-domain NEW=OLD``), else, taking the dropped domains in order, halfway
  between the mean of all the parent's heads and a dropped domain's, and the mean itself once no
  dropped domain is left. Starting new domains apart is what counts (at the mean they start alike
  and take a few hundred iterations to part; as full copies G draws them from the style alone sooner:
  README, "Start from a trained model"); which dropped domain a new one takes is not a likeness.
- G, F, E and D start from the parent's networks and the moving averages from the parent's moving
  averages (an imported release holds one set, which is both); a parent without D (a release) leaves D
  at its usual initialisation. The optimizers, the step and the schedules (lambda_ds's decay, the EMA
  warm-up) start at 0, with the training settings of the preset and ``--set``.
- ``config.yaml``'s ``init`` section records the parent (path, step, SHA-256 of its weights) and the
  domains. A resumed run reads its own checkpoints only: the parent may have moved or changed since.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stargan.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    checkpoint_info,
    load_into,
    read_networks,
)
from stargan.config import Config, ConfigError, InitConfig
from stargan.faces.masks import needs_masks, run_fan_file
from stargan.hub import sha256_file
from stargan.nets.v2 import Networks
from stargan.state import TrainState

# The model settings that change the networks' parameters or architecture: always the parent's.
SHAPE_SETTINGS = ("img_size", "latent_dim", "style_dim", "hidden_dim", "max_conv_dim", "base_dim", "w_hpf",
                  "g_downsamples", "g_out_norm", "g_skips", "g_skip_full", "g_residual")
V2_ONLY = ("starting a run from a trained model (--init-from) is StarGAN v2 only; train a StarGAN v1 model "
           "from scratch, or continue its run with --resume")
_HEAD = re.compile(r"^((?:ema\.)?(?:mapping_network|style_encoder)\.unshared\.)(\d+)\.(.+)$")


@dataclass(frozen=True)
class InitFrom:
    """What ``--init-from`` starts a run from: the parent checkpoint, ``--init-domain``'s copies (new
    domain -> parent domain), and the preset's model values the parent's replaced, as (key, preset's,
    parent's). The weights themselves are read when the run's networks are built."""

    parent: CheckpointInfo
    copies: dict[str, str] = field(default_factory=dict)
    replaced: tuple[tuple[str, Any, Any], ...] = ()


def read_parent(path: str | Path) -> CheckpointInfo:
    """The checkpoint of a StarGAN v2 run, or a checkpoint directory (read only: nothing is written there)."""
    path = Path(path)
    if path.is_file():
        raise ValueError(f"--init-from {path} is a file; it takes a run directory or a checkpoint directory. "
                         f"A released .ckpt becomes one with `stargan import-official {path} --out DIR`")
    parent = checkpoint_info(path)
    if parent.config.arch != "v2":
        raise ValueError(f"{parent.checkpoint} is a StarGAN {parent.config.arch} checkpoint: {V2_ONLY}")
    return parent


def parse_copies(items: Iterable[str]) -> dict[str, str]:
    """``--init-domain NEW=OLD`` options as {NEW: OLD}."""
    copies: dict[str, str] = {}
    for item in items:
        new, sep, old = (part.strip() for part in item.partition("="))
        if not (sep and new and old):
            raise ValueError(f"--init-domain takes NEW=OLD (a domain only the new data has = a domain of the "
                             f"parent whose heads it copies), got {item!r}")
        if new in copies:
            raise ValueError(f"--init-domain names {new!r} twice ({new}={copies[new]}, {new}={old})")
        copies[new] = old
    return copies


def start_config(config: Config, parent: CheckpointInfo, explicit: Iterable[str]
                 ) -> tuple[Config, tuple[tuple[str, Any, Any], ...]]:
    """``config`` (a preset and ``--set``) with the parent's model section, and the preset's values it
    replaced. ``explicit``: the model settings the user set (``--set model.X``, ``--no-masks``,
    ``--fan-weights``); one that would change the networks' shapes is refused, naming the parent's value;
    ``masks`` and ``fan_weights`` set so are kept. The domain count comes from the data later."""
    explicit, ours = set(explicit), parent.config.model
    refused = [f"model.{key}={getattr(config.model, key)!r}: expected {getattr(ours, key)!r}, the parent's"
               for key in SHAPE_SETTINGS if key in explicit and getattr(config.model, key) != getattr(ours, key)]
    if refused:
        raise ConfigError(f"invalid config: {'; '.join(refused)} (--init-from {parent.checkpoint} keeps the "
                          "parent's networks: drop those --set options, or train a new run without --init-from)")
    model = dataclasses.replace(ours, **{key: getattr(config.model, key) for key in ("masks", "fan_weights")
                                         if key in explicit})
    fan = run_fan_file(parent.checkpoint)  # an imported release's FAN weights, kept beside its checkpoints
    if needs_masks(model) and not model.fan_weights and fan is not None:
        model = dataclasses.replace(model, fan_weights=str(fan.resolve()))
    replaced = tuple((f"model.{f.name}", getattr(config.model, f.name), getattr(model, f.name))
                     for f in dataclasses.fields(model) if f.name not in ("num_domains", "fan_weights")
                     and getattr(config.model, f.name) != getattr(model, f.name))
    return dataclasses.replace(config, model=model), replaced


def with_init(config: Config, start: InitFrom) -> Config:
    """The run's config (its domains read from the data) with the ``init`` section that records the parent
    and what becomes of each domain; ``--init-domain`` errors here, before any file is written."""
    ours, data = start.parent.config.data.domains, config.data.domains
    problems = []
    for new, old in start.copies.items():
        if old not in ours:
            problems.append(f"{new}={old}: {old!r} is not a domain of the parent ({', '.join(ours)})")
        elif new not in data:
            problems.append(f"{new}={old}: {new!r} is not a domain of {config.data.root} ({', '.join(data)})")
        elif new in ours:
            problems.append(f"{new}={old}: {new!r} is a domain of the parent too and keeps its own heads; "
                            f"name a domain only the new data has ({', '.join(d for d in data if d not in ours)})")
    if problems:
        raise ValueError("--init-domain " + "; ".join(problems))
    parent = start.parent
    # New domains without --init-domain take the dropped domains in order (those no --init-domain copies)
    free = [d for d in ours if d not in data and d not in start.copies.values()]
    halves = dict(zip([d for d in data if d not in ours and d not in start.copies], free))
    init = InitConfig(
        path=str(parent.checkpoint.resolve()), step=parent.step, sha256=parent.sha256,
        discriminator="parent" if "discriminator" in parent.networks else "fresh",
        kept=tuple(d for d in data if d in ours), dropped=tuple(d for d in ours if d not in data),
        new=tuple(f"{d}=copy:{start.copies[d]}" if d in start.copies else f"{d}=half:{halves[d]}"
                  if d in halves else f"{d}=mean" for d in data if d not in ours))
    return dataclasses.replace(config, init=init)


# Where a head of the run starts: (index of a parent head, or None; weight w): the mean m of the parent's
# heads plus w * (that head - m). A kept or copied head is (index, 1.0): the head itself; a new one
# (None, 0.0) at the mean, or (index, 0.5) halfway from the mean to a dropped domain's head.
HeadSource = tuple[int | None, float]
_WEIGHTS = {"copy": 1.0, "half": 0.5}


def head_sources(parent_domains: tuple[str, ...], config: Config) -> list[HeadSource]:
    """For each domain of the run, where its heads start (see ``HeadSource``)."""
    rules = dict(item.split("=", 1) for item in config.init.new)
    sources: list[HeadSource] = []
    for d in config.data.domains:
        if d not in rules:
            sources.append((parent_domains.index(d), 1.0))
        elif rules[d] == "mean":
            sources.append((None, 0.0))
        else:
            kind, old = rules[d].split(":", 1)
            sources.append((parent_domains.index(old), _WEIGHTS[kind]))
    return sources


def remap_heads(tensors: dict[str, torch.Tensor], sources: list[HeadSource]) -> dict[str, torch.Tensor]:
    """The parent's tensors with one head per domain of the run, domain ``i``'s from ``sources[i]`` (see
    ``HeadSource``). F's and E's heads are the modules ``unshared.<i>`` (EMA ones too); D's are the rows
    of its last convolution. Shared layers as they are."""
    out, heads = {}, {}
    d_output = _discriminator_output(tensors)
    for key, value in tensors.items():
        if match := _HEAD.match(key):
            heads.setdefault((match[1], match[3]), {})[int(match[2])] = value
        elif d_output is not None and key.startswith(d_output):
            out[key] = torch.stack([_head(list(value), source) for source in sources])
        else:
            out[key] = value
    for (prefix, rest), by_index in heads.items():
        parent_heads = [by_index[i] for i in sorted(by_index)]
        for i, source in enumerate(sources):
            out[f"{prefix}{i}.{rest}"] = _head(parent_heads, source)
    return out


def _head(parent_heads: list[torch.Tensor], source: HeadSource) -> torch.Tensor:
    index, weight = source
    if index is not None and weight == 1.0:
        return parent_heads[index].clone()
    mean = torch.stack(parent_heads).mean(0)
    return mean if index is None else mean + weight * (parent_heads[index] - mean)


def _discriminator_output(tensors: dict[str, torch.Tensor]) -> str | None:
    """``discriminator.main.N.``, D's last convolution (one output channel per domain), if D is there."""
    layers = [int(key.split(".")[2]) for key in tensors if key.startswith("discriminator.main.")]
    return f"discriminator.main.{max(layers)}." if layers else None


def load_parent(state: TrainState, start: InitFrom, config: Config) -> None:
    """The parent's weights into a new run's state (see the module's description); D stays as built when
    the parent has none. Optimizers and step are left as they are: fresh. The weights read must be the
    ones ``config.init.sha256`` records."""
    parent = start.parent
    tensors = read_networks(parent.checkpoint)
    if sha256_file(parent.checkpoint / "networks.safetensors") != config.init.sha256:
        raise CheckpointError(f"{parent.checkpoint / 'networks.safetensors'} changed while the run was starting "
                              "(its SHA-256 is no longer the one recorded); start the run again")
    tensors = remap_heads(tensors, head_sources(parent.config.data.domains, config))
    nets = state.nets if config.init.discriminator == "parent" else Networks(
        state.nets.generator, state.nets.mapping_network, state.nets.style_encoder)
    load_into(nets, tensors, "", parent.checkpoint)
    load_into(state.ema, tensors, "ema.", parent.checkpoint)


def describe(start: InitFrom, init: InitConfig) -> str:
    """The first line of a run started from a trained model."""
    rules = dict(item.split("=", 1) for item in init.new)
    num_heads = len(init.kept) + len(init.dropped)
    new = [f"{d} (mean of the parent's {num_heads} heads)" if rule == "mean"
           else f"{d} (halfway from the mean of the parent's {num_heads} heads to {rule.removeprefix('half:')}'s)"
           if rule.startswith("half:") else f"{d} (copy of {rule.removeprefix('copy:')})"
           for d, rule in rules.items()]
    nets = "G, F, E" + (", D" if init.discriminator == "parent" else "")
    weights = (f"{nets} from the parent's networks, the moving averages from the parent's"
               if start.parent.with_optimizers else
               f"an imported release (no optimizer state): {nets} and the moving averages from its weights")
    if init.discriminator == "fresh":
        weights += "; D from its usual initialisation (the parent has none)"
    replaced = ", ".join(f"{key.removeprefix('model.')} {a!r} -> {b!r}" for key, a, b in start.replaced)
    return (f"init from {init.path} (step {init.step}, sha256 {init.sha256}): "
            f"kept {', '.join(init.kept) or 'none'}; new {', '.join(new) or 'none'}; "
            f"dropped {', '.join(init.dropped) or 'none'}; {weights}; model "
            f"settings from the parent" + (f", replacing the preset's ({replaced})" if replaced else "")
            + "; optimizers, step and schedules start at 0")
