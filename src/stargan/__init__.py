"""stargan: StarGAN v2 (and v1) multi-domain image-to-image translation in PyTorch."""
__version__ = "0.1.0"
