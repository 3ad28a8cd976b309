"""Inference throughput and peak memory of stvideo models, with a stated, fixed protocol.

Throughput: ``model.eval()`` under ``torch.inference_mode()``, a fixed random input of shape
(B, C, T, H, W), ``warmup`` untimed iterations per model, then ``iters`` timed iterations. With
several models the timed iterations are interleaved round-robin (model 1, 2, 3, 1, 2, 3, ...), so
background load on a shared machine slows every model alike instead of whichever ran last. Each
iteration is timed with ``time.perf_counter`` (after ``torch.cuda.synchronize`` on GPU); we report
the median clips/s and the interquartile range. dtype: fp32 on CPU; on GPU autocast bf16 (fp16
where bf16 is unsupported) unless given.

Peak memory: on GPU ``torch.cuda.max_memory_allocated`` (weights + input + activations). On CPU
torch has no allocator statistics, and tracemalloc does not see torch's allocations, so each
measurement runs in a fresh spawned process: glibc's mmap threshold is pinned (freed tensors
return to the OS), the kernel's RSS high-water mark is reset through /proc/self/clear_refs after a
warm-up iteration, and the peak is VmHWM minus the RSS just before the measured iteration, i.e. the
extra memory the forward (or training step) needs above the resident weights and input. The total
reported adds the weight, buffer and input bytes (and the optimizer state for a training step).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing as mp
import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import Tensor, nn

MiB = 2**20


@dataclass
class ThroughputResult:
    """Timed inference of one model: protocol, per-iteration times and summary statistics."""

    device: str
    dtype: str
    batch_size: int
    warmup: int
    iters: int
    threads: int
    times_s: list[float]
    median_s: float
    q1_s: float  # 25th percentile of the iteration time
    q3_s: float  # 75th percentile of the iteration time
    clips_per_s: float  # batch_size / median_s
    clips_per_s_iqr: tuple[float, float]  # (batch/q3, batch/q1): clips/s at the slow and fast quartiles

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class MemoryResult:
    """Peak memory of one inference forward or one training step, in MiB."""

    device: str
    method: str  # how the peak was measured
    batch_size: int
    train: bool
    weights_mib: float  # parameters + buffers
    peak_extra_mib: float  # peak above the state just before the measured iteration
    peak_total_mib: float  # weights + input (+ optimizer state) + peak_extra; GPU: max_memory_allocated

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def resolve_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """``auto``: fp32 on CPU; bf16 on GPU (fp16 if the GPU lacks bf16)."""
    names = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype != "auto":
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16")
        return names[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """Short name used in reports (fp32, bf16, fp16)."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _input(shape: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def benchmark_throughput(
    models: Mapping[str, nn.Module],
    input_shape: tuple[int, ...],
    warmup: int = 5,
    iters: int = 20,
    device: str = "auto",
    dtype: str = "auto",
) -> dict[str, ThroughputResult]:
    """Time ``models`` side by side on one input of ``input_shape`` (see the module docstring)."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    dev = resolve_device(device)
    dt = resolve_dtype(dev, dtype)
    x = _input(input_shape, dev)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode(), _autocast(dev, dt):
        for model in models.values():
            model.eval().to(dev)
            for _ in range(warmup):
                model(x)
            _sync(dev)
        for _ in range(iters):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(x)
                _sync(dev)
                times[name].append(time.perf_counter() - t0)
    results = {}
    batch = input_shape[0]
    for name, ts in times.items():
        q1, med, q3 = _quartiles(ts)
        results[name] = ThroughputResult(
            device=str(dev),
            dtype=dtype_name(dt),
            batch_size=batch,
            warmup=warmup,
            iters=iters,
            threads=torch.get_num_threads(),
            times_s=ts,
            median_s=med,
            q1_s=q1,
            q3_s=q3,
            clips_per_s=batch / med,
            clips_per_s_iqr=(batch / q3, batch / q1),
        )
    return results


def training_loss(out: Tensor | dict[str, Any], target: Tensor) -> Tensor:
    """The trainer's loss contract: plain logits, or ``{"logits", "aux_logits", "aux_weight"}``."""
    if isinstance(out, dict):
        w = out["aux_weight"]
        return (1 - w) * F.cross_entropy(out["logits"], target) + w * F.cross_entropy(
            out["aux_logits"], target
        )
    return F.cross_entropy(out, target)


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
    training_loss(model(x), target).backward()
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
        x = _input(input_shape, dev)
        target = torch.zeros(input_shape[0], dtype=torch.long, device=dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
        _step(model, x, target, opt)  # warm-up: lazy init, optimizer state, kernel workspaces
        weights = _tensor_mib(model.parameters()) + _tensor_mib(model.buffers())
        resident = weights + _tensor_mib(iter([x]))
        if opt is not None:
            resident += _tensor_mib(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
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


def profile_inference(model: nn.Module, input_shape: tuple[int, ...], iters: int = 3, rows: int = 15) -> str:
    """torch.profiler table of the top ops by self CPU time over ``iters`` inference forwards (CPU)."""
    x = _input(input_shape, torch.device("cpu"))
    model.eval()
    with torch.inference_mode():
        model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(iters):
                model(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
