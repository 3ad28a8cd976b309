"""stvideo: token-efficient video transformers on PyTorchVideo."""

from .compat import install_pytorchvideo_shim

install_pytorchvideo_shim()

__version__ = "0.1.0"


def __getattr__(name: str):
    """``stvideo.predict`` (see stvideo/engine/predict.py), imported on first use: ``import stvideo``
    stays light."""
    if name == "predict":
        from .engine.predict import predict

        return predict
    raise AttributeError(f"module 'stvideo' has no attribute {name!r}")
