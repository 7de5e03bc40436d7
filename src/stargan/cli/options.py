"""Options shared by several ``stargan`` commands."""
from __future__ import annotations

import argparse

from stargan.cli.faces import add_mask_options


def add_offline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--offline", action="store_true", help="never download missing weight files (as "
                   "STARGAN_OFFLINE=1): stop with what to fetch instead")


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads``, read by :func:`stargan.cli.main` (see :mod:`stargan.threads`): for the commands
    that run networks."""
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: one per core, less the "
                   "cores other processes keep busy at the start; or OMP_NUM_THREADS)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options of the commands that run a trained model."""
    p.add_argument("run", help="run directory or checkpoint directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--psi", type=float, default=1.0, help="truncation towards the mean style (1 = none)")
    add_threads(p)
    add_offline(p)
    add_mask_options(p)


def add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="torch: a run or checkpoint "
                   "directory, run by PyTorch (default); onnx: a folder written by `stargan export`, run by "
                   "ONNX Runtime (--threads: its threads)")
