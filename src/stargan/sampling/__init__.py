"""Sample grids and translation: StarGAN v1 (v1.py) and v2 (v2.py)."""
