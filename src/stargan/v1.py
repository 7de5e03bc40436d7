"""Public StarGAN v1 API: the two networks, their builder and the one-iteration training step.

The same names as :mod:`stargan.v2` (``Networks``, ``build_networks``, ``TrainState``, ``train_step``);
the names of earlier releases (``V1Networks``, ``build_v1_networks``, ``train_step_v1``, ...) still work
and warn."""
import warnings

from stargan.nets.v1 import Discriminator, Generator, Networks, build_networks
from stargan.state import V1TrainState as TrainState
from stargan.state import make_v1_train_state as make_train_state
from stargan.training.v1.step import learning_rates_at, train_step

__all__ = ["Discriminator", "Generator", "Networks", "TrainState", "build_networks", "learning_rates_at",
           "make_train_state", "train_step"]

_RENAMED = {"V1Networks": "Networks", "build_v1_networks": "build_networks", "V1TrainState": "TrainState",
            "make_v1_train_state": "make_train_state", "train_step_v1": "train_step"}


def __getattr__(name: str):
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"stargan.v1.{name} is now stargan.v1.{new}", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module 'stargan.v1' has no attribute {name!r}")
