"""Public StarGAN v2 API: the four networks, their builder and the one-iteration training step."""
from stargan.nets.v2 import Discriminator, Generator, MappingNetwork, Networks, StyleEncoder, build_networks
from stargan.state import TrainState, make_train_state
from stargan.training.v2.step import train_step

__all__ = ["Discriminator", "Generator", "MappingNetwork", "Networks", "StyleEncoder", "TrainState",
           "build_networks", "make_train_state", "train_step"]
