"""Faces: the landmark network (FAN) behind StarGAN v2's high-pass masks, and face alignment."""
from stargan.faces.fan import FAN, NUM_LANDMARKS
from stargan.faces.heatmaps import landmarks_from_heatmaps, masks_from_heatmaps
from stargan.faces.weights import find_fan_weights, load_fan, load_mean_landmarks

__all__ = ["FAN", "NUM_LANDMARKS", "find_fan_weights", "landmarks_from_heatmaps", "load_fan",
           "load_mean_landmarks", "masks_from_heatmaps"]
