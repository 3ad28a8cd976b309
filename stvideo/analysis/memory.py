"""Peak memory of one inference forward or training step, measured in a fresh process.

Peak memory: on GPU ``torch.cuda.max_memory_allocated`` (weights + input + activations). On CPU
torch has no allocator statistics, and tracemalloc does not see torch's allocations, so each
measurement runs in a fresh spawned process: glibc's mmap threshold is pinned (freed tensors
return to the OS), the kernel's RSS high-water mark is reset through /proc/self/clear_refs after a
warm-up iteration, and the peak is VmHWM minus the RSS just before the measured iteration, i.e. the
extra memory the forward (or training step) needs above the resident weights and input. A training
step starts with its gradients freed, so its extra holds the gradients (``grads_mib``) and the
activations saved for backward (what MODEL.ACT_CHECKPOINT reduces). The total reported adds the weight,
buffer and input bytes (and the optimizer state for a training step).
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import Tensor, nn

from stvideo.models.protocol import classification_loss

from .speed import fixed_input, resolve_device

MiB = 2**20


@dataclass
class MemoryResult:
    """Peak memory of one inference forward or one training step, in MiB."""

    device: str
    method: str  # how the peak was measured
    batch_size: int
    train: bool
    weights_mib: float  # parameters + buffers
    peak_extra_mib: float  # peak above the state just before the measured iteration
    grads_mib: float  # training: gradient bytes, allocated inside the measured step (part of peak_extra)
    peak_total_mib: float  # weights + input (+ optimizer state) + peak_extra; GPU: max_memory_allocated

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _tensor_mib(tensors: Iterator[Tensor]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / MiB


def _proc_status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _pin_malloc() -> None:
    """Make glibc serve every allocation >= 128 KiB with mmap and unmap it on free.

    By default glibc raises its mmap threshold after large frees and keeps freed memory resident,
    which would hide a later peak from RSS. Pinning M_MMAP_THRESHOLD (-3) disables that.
    """
    libc = ctypes.CDLL("libc.so.6")
    if libc.mallopt(-3, 128 * 1024) != 1:
        raise RuntimeError("mallopt(M_MMAP_THRESHOLD) failed; CPU peak memory would be unreliable")
    libc.malloc_trim(0)


def _step(model: nn.Module, x: Tensor, target: Tensor, opt: torch.optim.Optimizer | None) -> None:
    if opt is None:
        with torch.inference_mode():
            model(x)
        return
    opt.zero_grad(set_to_none=True)
    classification_loss(model(x), target).backward()
    opt.step()


def _memory_worker(
    cfg_yaml: str, input_shape: tuple[int, ...], train: bool, device: str, threads: int, queue: Any
) -> None:
    """Child process body of :func:`measure_memory`: build, warm up, reset the peak, measure."""
    try:
        torch.set_num_threads(threads)  # as in the parent: thread-local buffers are part of the peak
        from stvideo.config import get_cfg
        from stvideo.models import build_model

        dev = torch.device(device)
        cfg = get_cfg()
        cfg.merge_from_other_cfg(CfgNode.load_cfg(cfg_yaml))
        if dev.type == "cpu":
            _pin_malloc()
        torch.manual_seed(0)
        model = build_model(cfg).to(dev)
        model.train(train)
        x = fixed_input(input_shape, dev)
        target = torch.zeros(input_shape[0], dtype=torch.long, device=dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
        _step(model, x, target, opt)  # warm-up: lazy init, optimizer state, kernel workspaces
        weights = _tensor_mib(model.parameters()) + _tensor_mib(model.buffers())
        resident = weights + _tensor_mib(iter([x]))
        grads = 0.0
        if opt is not None:
            resident += _tensor_mib(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
            grads = _tensor_mib(p.grad for p in model.parameters() if p.grad is not None)
            opt.zero_grad(set_to_none=True)  # the measured step allocates its gradients itself
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev) / MiB
            _step(model, x, target, opt)
            torch.cuda.synchronize(dev)
            total = torch.cuda.max_memory_allocated(dev) / MiB
            extra, method = total - before, "torch.cuda.max_memory_allocated"
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            before = _proc_status_kib("VmRSS")
            _step(model, x, target, opt)
            extra = (_proc_status_kib("VmHWM") - before) / 1024
            total, method = resident + extra, "RSS high-water mark delta (fresh process, VmHWM)"
        queue.put(
            MemoryResult(
                device=str(dev),
                method=method,
                batch_size=input_shape[0],
                train=train,
                weights_mib=weights,
                peak_extra_mib=extra,
                grads_mib=grads,
                peak_total_mib=total,
            ).to_dict()
        )
    except BaseException as e:  # reported to the parent, which raises with the child's message
        queue.put({"error": f"{type(e).__name__}: {e}"})
        raise


def measure_memory(
    cfg: CfgNode,
    input_shape: tuple[int, ...],
    train: bool = False,
    device: str = "auto",
    timeout: float = 900,
) -> MemoryResult:
    """Peak memory of one inference forward (or one AdamW training step) of ``build_model(cfg)``.

    Runs in a fresh spawned process so earlier allocations in this process cannot mask the peak.
    """
    dev = resolve_device(device)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (cfg.dump(), tuple(input_shape), train, str(dev), torch.get_num_threads(), queue)
    proc = ctx.Process(target=_memory_worker, args=args)
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    if "error" in result:
        raise RuntimeError(
            f"memory measurement of {cfg.MODEL.ARCH} failed in the child process: {result['error']}"
        )
    return MemoryResult(**result)
