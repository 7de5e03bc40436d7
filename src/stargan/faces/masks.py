"""Which face masks a StarGAN v2 model uses: FAN masks whenever ``w_hpf > 0``, unless the config opts out.

The released CelebA-HQ model (``w_hpf = 1``) was trained and is sampled with the two masks of
:meth:`FAN.get_heatmap`; without them its generator gets no face detail. So a model with ``w_hpf > 0``
either finds the FAN weights or stops with :class:`~stargan.metrics.weights.WeightsError` before any
work, unless ``model.masks`` is false (``--no-masks``), which is then said out loud.
"""
from __future__ import annotations

from pathlib import Path

import torch

from stargan.config import ModelConfig
from stargan.faces.weights import RUN_FAN_FILE, find_fan_weights, load_fan
from stargan.nets.v2 import MaskFn


def needs_masks(model: ModelConfig) -> bool:
    return model.w_hpf > 0 and model.masks


def opt_out_note(model: ModelConfig) -> str | None:
    """The line to print when a ``w_hpf > 0`` model runs without masks by choice, else None."""
    if model.w_hpf > 0 and not model.masks:
        return (f"note: model.masks=false (--no-masks): the generator (w_hpf={model.w_hpf:g}) runs without "
                "face masks; this is not the paper's CelebA-HQ model")
    return None


def run_fan_file(run: str | Path | None) -> Path | None:
    """The FAN weights kept with a run (an imported release): RUN/fan.safetensors, also when ``run``
    is one of its checkpoint directories (RUN/checkpoints/step-NNNNNN)."""
    if run is None:
        return None
    run = Path(run)
    for folder in (run, run.parent.parent):
        if (folder / RUN_FAN_FILE).is_file():
            return folder / RUN_FAN_FILE
    return None


def find_mask_weights(model: ModelConfig, fan_weights: str | Path | None = None,
                      run: str | Path | None = None) -> Path | None:
    """The FAN weight file ``model`` needs (None when it needs none), without loading it.

    The FAN weights come from ``fan_weights``, else ``model.fan_weights``, else the run's own
    ``fan.safetensors``, else the weights folder; a missing file raises ``WeightsError``.
    """
    if not needs_masks(model):
        return None
    return find_fan_weights(fan_weights or model.fan_weights or run_fan_file(run) or None)


def load_mask_fn(model: ModelConfig, device: torch.device | str = "cpu",
                 fan_weights: str | Path | None = None, run: str | Path | None = None) -> MaskFn | None:
    """The mask function of ``model``: None when it needs none (w_hpf = 0, or masks: false), else the
    FAN's :meth:`~stargan.faces.FAN.get_heatmap` on ``device`` (weights: :func:`find_mask_weights`)."""
    path = find_mask_weights(model, fan_weights, run)
    return load_fan(path, device=device).get_heatmap if path is not None else None
