"""Inference throughput of stvideo models, with a stated, fixed protocol.

Throughput: ``model.eval()`` under ``torch.inference_mode()``, a fixed random input of shape
(B, C, T, H, W), ``warmup`` untimed iterations per model, then ``iters`` timed iterations. With
several models the timed iterations are interleaved round-robin (model 1, 2, 3, 1, 2, 3, ...), so
background load on a shared machine slows every model alike instead of whichever ran last. Each
iteration is timed with ``time.perf_counter`` (after ``torch.cuda.synchronize`` on GPU); we report
the median clips/s and the interquartile range. dtype: fp32 on CPU; on GPU autocast bf16 (fp16
where bf16 is unsupported) unless given.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn


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


def fixed_input(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """The same random clip for every model and run (seed 0), so timings compare like with like."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def benchmark_throughput(
    models: Mapping[str, nn.Module],
    input_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]],
    warmup: int = 5,
    iters: int = 20,
    device: str = "auto",
    dtype: str = "auto",
    inputs: Tensor | None = None,
) -> dict[str, ThroughputResult]:
    """Time ``models`` side by side (see the module docstring) on one input shape or one per model.

    Models with their own clip shape (SlowFast's 32 fast frames beside a 16-frame ViT) are still
    timed interleaved; clips/s then means views of each model's own shape. ``inputs`` replaces the
    fixed random clip by given clips (of ``input_shape``) for every model: real clips, for methods
    whose cost depends on the content (RLT).
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    dev = resolve_device(device)
    dt = resolve_dtype(dev, dtype)
    shapes = {n: input_shape[n] for n in models} if isinstance(input_shape, Mapping) else None
    if inputs is not None and (shapes or tuple(inputs.shape) != tuple(input_shape)):
        raise ValueError(f"given inputs {tuple(inputs.shape)} must have the one input shape {input_shape}")
    given = None if inputs is None else inputs.to(dev)
    clips = {
        n: given if given is not None else fixed_input(shapes[n] if shapes else input_shape, dev)
        for n in models
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode(), _autocast(dev, dt):
        for name, model in models.items():
            model.eval().to(dev)
            for _ in range(warmup):
                model(clips[name])
            _sync(dev)
        for _ in range(iters):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(clips[name])
                _sync(dev)
                times[name].append(time.perf_counter() - t0)
    results = {}
    for name, ts in times.items():
        batch = clips[name].shape[0]
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


def profile_inference(model: nn.Module, input_shape: tuple[int, ...], iters: int = 3, rows: int = 15) -> str:
    """torch.profiler table of the top ops by self CPU time over ``iters`` inference forwards (CPU)."""
    x = fixed_input(input_shape, torch.device("cpu"))
    model.eval()
    with torch.inference_mode():
        model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(iters):
                model(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
