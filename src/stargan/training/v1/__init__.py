"""StarGAN v1 training: one iteration (step) and the run (loop)."""
