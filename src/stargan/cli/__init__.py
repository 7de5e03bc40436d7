"""Command line: ``stargan demo | train | sample | translate | interpolate | eval | serve | download |
classifier | data | import-official | export | align | presets``."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from stargan.cli import evaluation, files, sampling, training
from stargan.cli.faces import add_align_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stargan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    training.add_commands(sub)     # train, demo, presets
    sampling.add_commands(sub)     # sample, translate, interpolate, serve
    files.add_commands(sub)        # import-official, export, download, data
    add_align_command(sub)
    evaluation.add_commands(sub)   # eval, classifier
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    if getattr(args, "offline", False):
        os.environ["STARGAN_OFFLINE"] = "1"  # read by stargan.hub wherever a file would be fetched
    from stargan.checkpoints import CheckpointWriteError
    from stargan.threads import choose_threads
    from stargan.training.runner import TrainingFailed, TrainingStopped

    try:
        if "threads" in args:  # the commands that run networks
            choose_threads(args.threads)
        args.func(args)
    except TrainingStopped as stop:  # a stop signal, after saving: 128 + signal number (130 for Ctrl-C)
        print(stop, file=sys.stderr)
        return stop.exit_status
    except (TrainingFailed, CheckpointWriteError) as err:  # the last good checkpoint is kept
        if err.__cause__ is not None and not isinstance(err, CheckpointWriteError):
            traceback.print_exception(err.__cause__)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:  # user errors: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the last checkpoint stays
        print("interrupted", file=sys.stderr)
        return 130
    return 0
