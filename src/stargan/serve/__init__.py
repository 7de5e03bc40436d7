"""`stargan serve`: a web page (Gradio) that translates uploaded images with a trained model."""
from stargan.serve.model import RequestError, ServedModel
from stargan.serve.page import Handlers, build_page, serve
from stargan.serve.uploads import UploadError, read_upload

__all__ = ["Handlers", "RequestError", "ServedModel", "UploadError", "build_page", "read_upload", "serve"]
