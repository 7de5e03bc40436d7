"""Translate with an exported StarGAN model using only ONNX Runtime, numpy and Pillow (no torch).

    from stargan.runtime import Translator
    tr = Translator.load("exports/afhq", backend="onnx")   # a folder written by `stargan export`
    dogs = tr.translate("cat.jpg", "dog", num_styles=4, seed=0)
    dog = tr.translate("cat.jpg", "dog", reference="dog.jpg")[0]
    face = Translator.load("exports/celeba128").translate("face.jpg", attributes=["Blond_Hair", "Young"])[0]

This package imports nothing of the rest of stargan, and never torch: ``pip install onnxruntime numpy
Pillow`` and it runs; it can also be copied as a folder beside one's own code (its imports are
relative). Its parts: ``manifest`` (the folder's manifest.json), ``images`` (decoding and the
preprocessing of ``stargan.data.transforms``), ``sessions`` (ONNX Runtime), ``v2`` and ``v1`` (the
graphs of each model kind), ``translator``.
"""
from .images import ImageError, load_image, to_array, to_images, to_uint8
from .manifest import ExportError, Manifest, read_manifest
from .translator import Translator

__all__ = ["ExportError", "ImageError", "Manifest", "Translator", "load_image", "read_manifest", "to_array",
           "to_images", "to_uint8"]
