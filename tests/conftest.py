"""One torch thread for the test suite: its networks are tiny, and on a shared 2-core machine two
threads competing with other work make them many times slower (results do not depend on it).

And no test downloads: missing weight files stay missing (tests of downloading unset this and
serve files from a loopback server)."""
import os

import torch

torch.set_num_threads(1)
os.environ["STARGAN_OFFLINE"] = "1"
