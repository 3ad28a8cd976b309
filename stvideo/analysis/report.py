"""The count_flops report: measure configured models side by side, render, plot, and its CLI.

FLOPs are counted with fvcore at batch 1 (one view) in eval mode (:mod:`stvideo.analysis.flops`),
throughput and memory follow the protocols of :mod:`stvideo.analysis.speed` and
:mod:`stvideo.analysis.memory`. Each model is built with random weights (MODEL.PRETRAINED is
ignored: weights change neither FLOPs nor speed). Ratios are against the first model.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from fvcore.common.config import CfgNode
from tabulate import tabulate
from torch import Tensor

from stvideo.config import ConfigError, load_config
from stvideo.config.load import build_arg_parser, parse_with_overrides
from stvideo.data.build import build_dataset
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.data.transforms import cut_views
from stvideo.models import build_model
from stvideo.utils.checkpoint_io import CheckpointError
from stvideo.utils.compile import compile_model, dynamo_counts

from .flops import CONVENTION, count_flops, count_parameters, gflops_str, layer_table, model_flops
from .memory import measure_memory
from .speed import benchmark_throughput, dtype_name, profile_inference, resolve_device, resolve_dtype

CONFIG_SUFFIXES = (".yaml", ".yml")


def parse_cli(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """stvideo's ``--cfg FILE [KEY VALUE ...] [--opts ...]`` plus count_flops' flags."""
    parser = build_arg_parser(description=description or __doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--compare", nargs="+", default=[], help="more config files, compared with --cfg")
    parser.add_argument("--json", dest="json_out", help="write every number to this JSON file")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per timed forward (default 1)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations per model (default 5)")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per model (default 20)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="auto (fp32 CPU, bf16 GPU), fp32, bf16 or fp16")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-speed", action="store_true", help="skip the throughput measurement")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--train-memory", action="store_true", help="also measure one AdamW training step")
    parser.add_argument(
        "--compile", action="store_true", help="also time each model torch.compile'd, interleaved with eager"
    )
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode for --compile")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS", help="print top-ROWS profiler ops")
    parser.add_argument(
        "--real-clip",
        metavar="DIR",
        help="count and time every model on the first test view of the dataset in DIR (--real-clip-dataset) "
        "instead of a random clip: content-dependent methods (RLT) then run at their real token counts",
    )
    parser.add_argument("--real-clip-dataset", default="synth", help="dataset registry name for --real-clip")
    parser.add_argument("--plot", help="PNG of accuracy vs GFLOPs (needs --results)")
    parser.add_argument("--results", nargs="+", default=[], help="NAME=test_metrics.json for --plot")
    greedy = {"compare": lambda c: c.endswith(CONFIG_SUFFIXES), "results": lambda r: "=" in r}
    args = parse_with_overrides(parser, argv, greedy)
    if not args.cfg_file:
        parser.error("--cfg FILE is required")
    if args.plot and not args.results:
        parser.error("--plot needs --results NAME=test_metrics.json ...")
    return args


def model_names(paths: list[str]) -> list[str]:
    """Config file stems, made unique with a numeric suffix where two files share a stem."""
    names: list[str] = []
    for p in paths:
        stem, n = Path(p).stem, 2
        name = stem
        while name in names:
            name, n = f"{stem}_{n}", n + 1
        names.append(name)
    return names


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build every model and measure it; return the JSON-ready report."""
    paths = [args.cfg_file] + args.compare
    names = model_names(paths)
    cfgs = []
    for path in paths:
        cfg = load_config(path, args.opts)
        cfg.defrost()
        cfg.MODEL.PRETRAINED = ""
        cfg.freeze()
        cfgs.append(cfg)
    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    clip = real_clip(cfgs[0], args.real_clip, args.real_clip_dataset) if args.real_clip else None
    models, entries = {}, []
    for name, path, cfg in zip(names, paths, cfgs, strict=True):
        torch.manual_seed(cfg.RNG_SEED)
        model = build_model(cfg)
        size = cfg.DATA.TEST_CROP_SIZE  # one test view (CNNs test fully convolutionally at a larger crop)
        view = (1, cfg.DATA.INPUT_CHANNEL_NUM, cfg.DATA.NUM_FRAMES, size, size)
        if clip is None:
            report = model_flops(model, view)
        else:
            if tuple(clip.shape[1:]) != view[1:]:
                raise ConfigError(
                    f"{path}: view {view[1:]} differs from the --real-clip view {tuple(clip.shape[1:])}"
                )
            with torch.no_grad():
                report = count_flops(model.eval(), clip)
        views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
        entries.append(
            {
                "name": name,
                "config": path,
                "arch": cfg.MODEL.ARCH,
                "size": cfg.MODEL.SIZE,
                "input_shape": list(view[1:]),
                "test_crop_size": cfg.DATA.TEST_CROP_SIZE,
                "params": count_parameters(model),
                "gflops_per_view": report.total / 1e9,
                "views": views,
                "view_protocol": f"{cfg.TEST.NUM_ENSEMBLE_VIEWS} clips x {cfg.TEST.NUM_SPATIAL_CROPS} crops",
                "gflops_x_views": report.total * views / 1e9,
                **report.to_dict(),
            }
        )
        models[name] = model
    shapes = {e["name"]: (args.batch_size, *e["input_shape"]) for e in entries}
    compiled_at = (
        compile_side_by_side(models, shapes, entries, args.compile_mode, device) if args.compile else 0
    )
    compiles_while_timed = None
    if not args.no_speed:
        if clip is None:
            speed = benchmark_throughput(
                models, shapes, args.warmup, args.iters, str(device), dtype_name(dtype)
            )
        else:
            batch = clip.expand(args.batch_size, *clip.shape[1:]).contiguous()
            speed = benchmark_throughput(
                models,
                tuple(batch.shape),
                args.warmup,
                args.iters,
                str(device),
                dtype_name(dtype),
                inputs=batch,
            )
        for e in entries:
            e["throughput"] = speed[e["name"]].to_dict()
            if args.compile:
                e["throughput_compiled"] = t = speed[e["name"] + COMPILED].to_dict()
                e["compile_speedup"] = t["clips_per_s"] / e["throughput"]["clips_per_s"]
        if args.compile:  # frames dynamo compiled during warm-up + timed iterations: 0 = no recompiles
            compiles_while_timed = dynamo_counts()["frames_compiled"] - compiled_at
    for name in [n for n in models if n.endswith(COMPILED)]:
        del models[name]
    for e, cfg in zip(entries, cfgs, strict=True):
        shape = shapes[e["name"]]
        if not args.no_memory:
            e["memory_inference"] = measure_memory(cfg, shape, train=False, device=str(device)).to_dict()
            if args.train_memory:
                e["memory_train_step"] = measure_memory(cfg, shape, train=True, device=str(device)).to_dict()
        if args.profile:
            e["profile"] = profile_inference(models[e["name"]], shape, rows=args.profile)
    return {
        "convention": CONVENTION,
        "flops_batch": 1,
        "input": f"first test view of {args.real_clip} ({args.real_clip_dataset})"
        if clip is not None
        else "random",
        "environment": {
            "torch": torch.__version__,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "cpu_threads": torch.get_num_threads(),
        },
        "overrides": args.opts,
        "models": entries,
        "ratios": ratios(entries),
        **({"compiles_while_timed": compiles_while_timed} if args.compile else {}),
    }


COMPILED = "+compiled"


def compile_side_by_side(
    models: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    entries: list[dict[str, Any]],
    mode: str,
    device: torch.device,
) -> int:
    """Add a torch.compile'd copy of every model to ``models`` (timed interleaved with the eager one);
    record each copy's compile time, frames compiled and graph breaks on its first calls (eval, batch
    and batch + 1, so a second batch size shows whether shapes are treated as dynamic). Returns dynamo's
    frame count after all first calls."""
    for e in entries:
        name = e["name"]
        compiled = compile_model(copy.deepcopy(models[name]).eval(), mode).to(device)
        before = dynamo_counts()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in (shapes[name][0], shapes[name][0] + 1):
                compiled(torch.zeros((b, *shapes[name][1:]), device=device))
        after = dynamo_counts()
        e["compile"] = {
            "mode": mode,
            "first_calls_s": time.perf_counter() - t0,
            "frames_compiled": after["frames_compiled"] - before["frames_compiled"],
            "graph_breaks": after["graph_breaks"] - before["graph_breaks"],
        }
        models[name + COMPILED] = compiled
        shapes[name + COMPILED] = shapes[name]
    return dynamo_counts()["frames_compiled"]


def real_clip(cfg: CfgNode, data_dir: str, dataset: str) -> Tensor:
    """The first test view (1, C, T, H, W), normalised, of ``dataset`` in ``data_dir`` at ``cfg``'s size."""
    data_cfg = cfg.clone()
    data_cfg.defrost()
    data_cfg.TEST.DATASET, data_cfg.DATA.PATH_TO_DATA_DIR = dataset, data_dir
    if dataset == "synth":  # the generator's own class count and flip map
        meta = json.loads((Path(data_dir) / "synth_meta.json").read_text())
        data_cfg.MODEL.NUM_CLASSES = len(meta["classes"])
        data_cfg.DATA.FLIP_LABEL_MAP = str(Path(data_dir) / "flip_label_map.json")
    data_cfg.freeze()
    item = build_dataset(data_cfg, "test")[0]
    video = cut_views(item["frames"][:1], item["crops"][:1], data_cfg.DATA.TEST_CROP_SIZE)
    return ClipPreprocessor(data_cfg, "cpu")(video)


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux); platform.processor() is often empty there."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def ratios(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model against the first: FLOPs fraction and ratio, speed-up, speed-up / FLOPs ratio."""
    base = entries[0]
    out = []
    for e in entries[1:]:
        row = {
            "name": e["name"],
            "baseline": base["name"],
            "flops_fraction": e["gflops_per_view"] / base["gflops_per_view"],
            "flops_ratio": base["gflops_per_view"] / e["gflops_per_view"],  # > 1: fewer FLOPs
        }
        if "throughput" in e:
            row["speedup"] = e["throughput"]["clips_per_s"] / base["throughput"]["clips_per_s"]
            row["speedup_over_flops_ratio"] = row["speedup"] / row["flops_ratio"]
        out.append(row)
    return out


def render(report: dict[str, Any]) -> str:
    """Terminal form of the report."""
    env = report["environment"]
    lines = [
        f"FLOPs convention: {report['convention']}; counted at batch 1 (one view), eval mode, "
        f"{report['input']} input.",
        f"Environment: torch {env['torch']}, {env['device']} ({env['device_name']}), "
        f"{env['cpu_threads']} CPU threads.",
    ]
    summary = []
    for e in report["models"]:
        row = [
            e["name"],
            e["arch"],
            "x".join(map(str, e["input_shape"])),
            f"{e['params'] / 1e6:.2f}",
            gflops_str(e["gflops_per_view"]),
            f"{gflops_str(e['gflops_per_view'])} x {e['views']} = {gflops_str(e['gflops_x_views'])}",
        ]
        if "throughput" in e:
            t = e["throughput"]
            lo, hi = t["clips_per_s_iqr"]
            row.append(f"{t['clips_per_s']:.3f} [{lo:.3f}, {hi:.3f}]")
        if "throughput_compiled" in e:
            t, c = e["throughput_compiled"], e["compile"]
            row.append(f"{t['clips_per_s']:.3f} ({e['compile_speedup']:.2f}x)")
            row.append(f"{c['frames_compiled']} / {c['graph_breaks']}")
        if "memory_inference" in e:
            row.append(f"{e['memory_inference']['peak_total_mib']:.0f}")
        if "memory_train_step" in e:
            row.append(f"{e['memory_train_step']['peak_total_mib']:.0f}")
        summary.append(row)
    headers = ["model", "arch", "input CxTxHxW", "params (M)", "GFLOPs/view", "GFLOPs x views"]
    first = report["models"][0]
    if "throughput" in first:
        headers.append("clips/s median [IQR]")
    if "throughput_compiled" in first:
        headers += ["compiled clips/s (speed-up)", "compiles / graph breaks"]
    if "memory_inference" in first:
        headers.append("infer peak MiB")
    if "memory_train_step" in first:
        headers.append("train-step peak MiB")
    lines += ["", tabulate(summary, headers=headers)]
    if "throughput" in first:
        t = first["throughput"]
        lines.append(
            f"Throughput protocol: batch {t['batch_size']}, {t['warmup']} warm-up + {t['iters']} timed "
            f"iterations per model (interleaved), {t['dtype']} on {t['device']}, {t['threads']} threads, "
            "inference_mode; median clips/s and interquartile range."
        )
    if "compiles_while_timed" in report:
        lines.append(
            f"torch.compile ({first['compile']['mode']}): compiles and graph breaks over the first calls "
            "at batch B and B+1; frames compiled during warm-up and timed iterations: "
            f"{report['compiles_while_timed']}."
        )
    if "memory_inference" in first:
        m = first["memory_inference"]
        lines.append(f"Peak memory: {m['method']}; total = weights + input (+ optimizer state) + peak extra.")
    if report["ratios"]:
        rows = []
        for r in report["ratios"]:
            row = [r["name"], f"{100 * r['flops_fraction']:.1f}%", f"{r['flops_ratio']:.2f}x"]
            if "speedup" in r:
                row += [f"{r['speedup']:.2f}x", f"{100 * r['speedup_over_flops_ratio']:.0f}%"]
            rows.append(row)
        headers = ["vs " + report["ratios"][0]["baseline"], "FLOPs", "FLOPs ratio", "speed-up"]
        headers.append("speed-up / FLOPs ratio")
        lines += ["", tabulate(rows, headers=headers[: len(rows[0])])]
    for e in report["models"]:
        lines += [
            "",
            f"== {e['name']} ({e['arch']}): where the FLOPs go ==",
            tabulate(
                layer_table(e["layers"], e["flops"]),
                headers=["module", "GFLOPs", "%", "query tokens", "key tokens", "MLP tokens"],
            ),
            "by operator (GFLOPs): "
            + ", ".join(f"{k} {gflops_str(v / 1e9)}" for k, v in e["by_operator"].items()),
            "counted as zero (calls): "
            + ", ".join(f"{op.split('::')[-1]} {v['calls']}" for op, v in e["zero_cost_ops"].items()),
            "unsupported ops (not counted): "
            + (", ".join(f"{k} x{v}" for k, v in e["unsupported_ops"].items()) or "none"),
        ]
        if "profile" in e:
            lines += [f"-- profile of {e['name']} (self CPU time) --", e["profile"]]
    return "\n".join(lines)


def read_results(results: list[str], names: list[str]) -> list[tuple[str, float]]:
    """``NAME=test_metrics.json`` items -> (model name, top-1), checked before anything is measured."""
    points = []
    for item in results:
        name, path = item.split("=", 1)
        if name not in names:
            raise SystemExit(f"--results {item}: no model named {name!r}; models: {', '.join(names)}")
        with open(path) as f:
            metrics = json.load(f)
        if "top1" not in metrics:
            raise SystemExit(f"--results {item}: {path} has no 'top1' (is it a test_metrics.json?)")
        points.append((name, float(metrics["top1"])))
    return points


def plot_accuracy(report: dict[str, Any], results: list[tuple[str, float]], out: str) -> None:
    """Scatter of test top-1 (from each run's test_metrics.json) against GFLOPs per view."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from e
    by_name = {e["name"]: e for e in report["models"]}
    points = [(name, by_name[name]["gflops_per_view"], top1) for name, top1 in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, gflops, top1 in points:
        ax.scatter(gflops, top1)
        ax.annotate(name, (gflops, top1), textcoords="offset points", xytext=(4, 4))
    views = report["models"][0]["view_protocol"]
    ax.set_xlabel("GFLOPs per view (fvcore, 1 multiply-add = 1 FLOP)")
    ax.set_ylabel(f"top-1 (%), {views}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    report["plot"] = {"path": out, "points": [{"name": n, "gflops": g, "top1": t} for n, g, t in points]}


def main(argv: list[str] | None = None, description: str | None = None) -> None:
    """Measure, print, and optionally write JSON and the accuracy plot."""
    args = parse_cli(argv, description)
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # memory children inherit it (see measure_memory)
    results = read_results(args.results, model_names([args.cfg_file] + args.compare))
    try:
        report = measure(args)
    except (ConfigError, FileNotFoundError) as e:
        sys.exit(f"Config error: {e}")
    except CheckpointError as e:
        sys.exit(f"Checkpoint error: {e}")
    if args.plot:
        plot_accuracy(report, results, args.plot)
    print(render(report))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nJSON written to {args.json_out}")
