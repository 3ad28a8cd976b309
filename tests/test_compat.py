"""The pytorchvideo 0.1.5 + modern torchvision import fix (stvideo.compat)."""

import subprocess
import sys


def test_pytorchvideo_transforms_imports_after_stvideo():
    code = (
        "import stvideo, pytorchvideo.transforms as T, torch;"
        "x = torch.rand(3, 4, 8, 10);"
        "y = T.ShortSideScale(6)(x);"  # uses the aliased functional_tensor module inside
        "print(tuple(y.shape))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(3, 4, 6, 7)"


def test_old_module_name_aliases_the_renamed_module():
    import torchvision.transforms._functional_tensor as new

    from stvideo.compat import install_pytorchvideo_shim

    install_pytorchvideo_shim()
    assert sys.modules["torchvision.transforms.functional_tensor"] is new
