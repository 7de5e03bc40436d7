"""One torch thread for the test suite: its networks are tiny, and on a shared 2-core machine two
threads competing with other work make them many times slower (results do not depend on it)."""
import torch

torch.set_num_threads(1)
