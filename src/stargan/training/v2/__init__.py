"""StarGAN v2 training: one iteration (step) and the run (loop)."""
