"""Make ``pytorchvideo.transforms`` importable with modern torchvision.

pytorchvideo 0.1.5 (the newest release on PyPI) imports ``torchvision.transforms.functional_tensor``,
which torchvision 0.17 renamed to ``_functional_tensor``; the fix is on pytorchvideo's main branch but
was never released. We register the old module name as an alias of the new one before pytorchvideo
is imported. Nothing else of torchvision or pytorchvideo is patched.
"""

import importlib
import sys


def install_pytorchvideo_shim() -> None:
    """Alias ``torchvision.transforms.functional_tensor`` if torchvision no longer has it."""
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        sys.modules[name] = importlib.import_module("torchvision.transforms._functional_tensor")
