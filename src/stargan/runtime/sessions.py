"""ONNX Runtime sessions for the graphs of an export: which execution provider, how many threads."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = "pip install onnxruntime (or pip install 'stargan[onnx]')"


def onnxruntime_module() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"running an exported model needs ONNX Runtime: {INSTALL_HINT}") from error
    return onnxruntime


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` when this onnxruntime has CUDA, else ``cpu``; other names as they are."""
    if device != "auto":
        return device
    return "cuda" if "CUDAExecutionProvider" in onnxruntime_module().get_available_providers() else "cpu"


def providers_for(device: str) -> list[Any]:
    """``cpu``, ``cuda``/``cuda:N`` or ``auto`` (CUDA when this onnxruntime has it) as a provider list."""
    available = onnxruntime_module().get_available_providers()
    device = resolve_device(device)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise ValueError(f"device {device!r}: this onnxruntime has no CUDA provider (it has "
                             f"{', '.join(available)}); pip install onnxruntime-gpu, or use device 'cpu'")
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}; expected cpu, cuda, cuda:N or auto")


def session_opener(device: str = "cpu", threads: int | None = None) -> Callable[[Path], Any]:
    """A function opening one ONNX file as an ``InferenceSession`` on ``device``.

    ``threads``: intra-op threads; default OMP_NUM_THREADS when set (one thread per process under
    torchrun or on a shared machine), else ONNX Runtime's own choice (one per physical core).
    """
    ort = onnxruntime_module()
    providers = providers_for(device)
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads is not None and threads < 0:
        raise ValueError(f"threads must be >= 0 (0: ONNX Runtime's choice), got {threads}")

    def open_session(path: Path) -> Any:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValueError(f"cannot load {path} with onnxruntime {ort.__version__}: {error}") from error

    return open_session


def run(session: Any, inputs: tuple[str, ...], outputs: tuple[str, ...], *arrays: np.ndarray
        ) -> list[np.ndarray]:
    """The graph's ``outputs`` for ``arrays`` given in the order of ``inputs`` (made contiguous)."""
    feed = {name: np.ascontiguousarray(array) for name, array in zip(inputs, arrays)}
    return session.run(list(outputs), feed)
