"""stvideo: token-efficient video transformers on PyTorchVideo."""

from .compat import install_pytorchvideo_shim

install_pytorchvideo_shim()

__version__ = "0.1.0"
