"""Faces: the landmark network (FAN) behind StarGAN v2's high-pass masks, and face alignment."""
from stargan.faces.fan import FAN, NUM_LANDMARKS
from stargan.faces.heatmaps import landmarks_from_heatmaps, masks_from_heatmaps

__all__ = ["FAN", "NUM_LANDMARKS", "landmarks_from_heatmaps", "masks_from_heatmaps"]
