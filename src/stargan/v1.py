"""Public StarGAN v1 API: the two networks, their builder and the one-iteration training step."""
from stargan.nets.v1 import Discriminator, Generator, V1Networks, build_v1_networks
from stargan.state import V1TrainState, make_v1_train_state
from stargan.training.step_v1 import learning_rates_at, train_step_v1

__all__ = ["Discriminator", "Generator", "V1Networks", "V1TrainState", "build_v1_networks",
           "learning_rates_at", "make_v1_train_state", "train_step_v1"]
