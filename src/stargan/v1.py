"""Public StarGAN v1 API: the two networks, their builder and the one-iteration training step."""
from stargan.nets.v1 import Discriminator, Generator, V1Networks, build_v1_networks
from stargan.training.step_v1 import V1TrainState, learning_rates_at, make_v1_train_state, train_step_v1

__all__ = ["Discriminator", "Generator", "V1Networks", "V1TrainState", "build_v1_networks",
           "learning_rates_at", "make_v1_train_state", "train_step_v1"]
