"""The arena: one trained ViT, token methods applied without training, swept over FLOP budgets.

For each method and budget (a target fraction of the unreduced model's GFLOPs per view) the method's
knob is searched with the real FLOP counter (:func:`stvideo.analysis.flops.count_flops`, fvcore with
attention at the token counts the model runs) and the candidate closest to the budget is taken; its
achieved fraction is reported. Every chosen model gets the trained ViT's weights
(:func:`stvideo.engine.checkpoint.load_model_weights`; parameters a ViT lacks keep their initial,
inactive values) and is tested with the config's multi-view protocol on the real test set (the
evaluator's :func:`~stvideo.engine.evaluator.collect_view_logits` on the test batches, decoded once).

Knobs: ``tome`` tokens merged per layer (TOME.R, from TOME.START_LAYER); ``rlt`` RLT.THRESHOLD;
``evovit`` slow-path tokens (EVO.KEEP_RATIO); ``random_drop`` CONTROL.KEEP_TOKENS; ``uniform_pool``
the pooled token count (STVIT.GRID in joint mode). RLT's cost depends on the clip: its GFLOPs are the
mean (and spread) over every test view, each counted at the tokens it keeps (fvcore on a clip that
keeps exactly that many, memoised by count). Throughput: every chosen model and the unreduced ViT
timed side by side, interleaved (:func:`~stvideo.analysis.speed.benchmark_throughput`), on the same
batch of real test views.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fvcore.common.config import CfgNode
from tabulate import tabulate
from torch import Tensor, nn
from tqdm import tqdm

from stvideo.config import ConfigError, load_config
from stvideo.config.load import build_arg_parser, parse_with_overrides
from stvideo.data import build_loader
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.data.transforms import views_of_test_batch
from stvideo.engine.checkpoint import load_model_weights
from stvideo.engine.evaluator import collect_view_logits, video_metrics
from stvideo.models import build_model
from stvideo.models.build import vit_kwargs
from stvideo.models.rlt import tube_differences
from stvideo.utils.checkpoint_io import CheckpointError

from .flops import count_flops, model_flops
from .speed import benchmark_throughput

METHODS = ("tome", "rlt", "evovit", "random_drop", "uniform_pool")


def token_grid(cfg: CfgNode) -> tuple[int, int, int]:
    """(T', H', W') tube-token grid of a ViT config."""
    kw = vit_kwargs(cfg)
    size = kw["img_size"] // kw["patch_size"]
    return kw["num_frames"] // kw["tubelet_size"], size, size


def pooled_grids(grid: tuple[int, int, int]) -> dict[int, list[int]]:
    """One joint pooling grid per token count M (the most even one), for ``uniform_pool``'s knob."""
    best: dict[int, list[int]] = {}
    for t in range(1, grid[0] + 1):
        for h in range(1, grid[1] + 1):
            for w in range(1, grid[2] + 1):
                m, g = t * h * w, [t, h, w]
                if m not in best or max(g) - min(g) < max(best[m]) - min(best[m]):
                    best[m] = g
    return best


def knob_candidates(method: str, cfg: CfgNode) -> list[Any]:
    """The discrete knob values of ``method``, ordered from most to fewest FLOPs."""
    n = math.prod(token_grid(cfg))
    if method == "tome":
        return list(range(0, (n + 1) // 2 + 1))
    if method in ("evovit", "random_drop"):
        return list(range(n, 0, -1))
    if method == "uniform_pool":
        grids = pooled_grids(token_grid(cfg))
        return [grids[m] for m in sorted(grids, reverse=True)]
    raise ValueError(f"{method} has no discrete knob")


def method_cfg(cfg: CfgNode, method: str, knob: Any) -> CfgNode:
    """``cfg`` (a trained ViT's) turned into ``method`` at knob value ``knob``."""
    out = cfg.clone()
    out.defrost()
    out.MODEL.ARCH = method
    out.MODEL.PRETRAINED = ""
    n = math.prod(token_grid(cfg))
    if method == "tome":
        out.TOME.R = [int(knob)]
    elif method == "rlt":
        out.RLT.THRESHOLD = float(knob)
    elif method == "evovit":
        out.EVO.KEEP_RATIO = min(1.0, (int(knob) + 0.5) / n)  # EvoViT keeps int(N * ratio) = knob tokens
    elif method == "random_drop":
        out.CONTROL.KEEP_TOKENS = int(knob)
    elif method == "uniform_pool":
        out.STVIT.GRID, out.STVIT.GRID_MODE = list(knob), "joint"
    elif method != "vit":
        raise ValueError(f"unknown arena method {method!r}; use {', '.join(METHODS)}")
    out.freeze()
    return out


def knob_label(method: str, knob: Any) -> str:
    """Short text of a knob value for tables."""
    names = {"tome": "r", "rlt": "threshold", "evovit": "keep", "random_drop": "keep", "uniform_pool": "grid"}
    if method == "rlt":
        return f"threshold {knob:.4g}"
    if method == "uniform_pool":
        return "grid " + "x".join(map(str, knob))
    return f"{names.get(method, 'knob')} {knob}"


def clip_keeping(shape: tuple[int, ...], tubelet: int, patch: int, kept: int, seed: int = 0) -> Tensor:
    """A random clip (1, C, T, H, W) whose tubes repeat exactly so that RLT keeps ``kept`` of them.

    The last tubes in token order (never the first tubelet) copy the tube one tubelet earlier.
    """
    clip = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    t, h, w = shape[2] // tubelet, shape[3] // patch, shape[4] // patch
    drop = t * h * w - kept
    if not 0 <= drop <= (t - 1) * h * w:
        raise ValueError(f"RLT keeps between {h * w} and {t * h * w} tubes, not {kept}")
    for index in range(t * h * w - drop, t * h * w):
        ti, rest = divmod(index, h * w)
        hi, wi = divmod(rest, w)
        ts, hs = slice(ti * tubelet, (ti + 1) * tubelet), slice(hi * patch, (hi + 1) * patch)
        ws = slice(wi * patch, (wi + 1) * patch)
        prev = slice((ti - 1) * tubelet, ti * tubelet)
        clip[:, :, ts, hs, ws] = clip[:, :, prev, hs, ws]
    return clip


@dataclass
class CostModel:
    """GFLOPs per view of a method's models, counted with fvcore and memoised."""

    cfg: CfgNode
    view: tuple[int, ...]
    _flops: dict[tuple[str, str], float] = field(default_factory=dict)

    def gflops(self, method: str, knob: Any) -> float:
        """GFLOPs of one view of ``method`` at a clip-independent ``knob`` (not rlt)."""
        key = (method, json.dumps(knob))
        if key not in self._flops:
            model = build_model(method_cfg(self.cfg, method, knob)).eval()
            self._flops[key] = model_flops(model, self.view).total / 1e9
        return self._flops[key]

    def rlt_gflops(self, kept: int) -> float:
        """GFLOPs of one RLT view that keeps ``kept`` tubes."""
        key = ("rlt", str(kept))
        if key not in self._flops:
            model = build_model(method_cfg(self.cfg, "rlt", 1e-3)).eval()  # only the exact copies drop
            pe = model.patch_embed
            clip = clip_keeping(self.view, pe.tubelet_size, pe.patch_size, kept)
            with torch.no_grad():
                self._flops[key] = count_flops(model, clip).total / 1e9
        return self._flops[key]


def closest_index(values: Callable[[int], float], count: int, target: float) -> int:
    """Index into a list of ``count`` non-increasing ``values(i)`` whose value is closest to ``target``.

    Bisection: ``values`` is called O(log count) times. Ties go to the cheaper candidate.
    """
    lo, hi = 0, count - 1
    if values(hi) > target:
        return hi
    while lo < hi:  # first index with value <= target
        mid = (lo + hi) // 2
        if values(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    if lo > 0 and abs(values(lo - 1) - target) < abs(values(lo) - target):
        return lo - 1
    return lo


def choose_knob(
    method: str, cfg: CfgNode, costs: CostModel, diffs: Tensor, target: float
) -> tuple[Any, float, dict[str, float] | None]:
    """(knob, GFLOPs per view, RLT's spread or None) of the knob whose cost is closest to ``target``."""
    if method == "rlt":
        thresholds = rlt_thresholds(diffs)
        i = closest_index(lambda j: rlt_cost(costs, diffs, thresholds[j])["mean"], len(thresholds), target)
        spread = rlt_cost(costs, diffs, thresholds[i])
        return thresholds[i], spread["mean"], spread
    candidates = knob_candidates(method, cfg)
    i = closest_index(lambda j: costs.gflops(method, candidates[j]), len(candidates), target)
    return candidates[i], costs.gflops(method, candidates[i]), None


def rlt_kept(diffs: Tensor, threshold: float) -> Tensor:
    """Tubes RLT keeps per view, from the (V, T'-1, H', W') tube differences of the views."""
    first = diffs.shape[2] * diffs.shape[3]
    return first + (diffs >= threshold).flatten(1).sum(1)


def rlt_cost(costs: CostModel, diffs: Tensor, threshold: float) -> dict[str, float]:
    """Mean, std, min and max GFLOPs per view over the test views at ``threshold``."""
    kept = rlt_kept(diffs, threshold)
    per_view = [costs.rlt_gflops(int(k)) for k in kept]
    kept = kept.float()
    return {
        "mean": statistics.fmean(per_view),
        "std": statistics.pstdev(per_view),
        "min": min(per_view),
        "max": max(per_view),
        "tokens_kept_mean": float(kept.mean()),
        "tokens_kept_min": int(kept.min()),
        "tokens_kept_max": int(kept.max()),
    }


def rlt_thresholds(diffs: Tensor, count: int = 256) -> list[float]:
    """Candidate thresholds, most FLOPs first: 0 (keep all), then quantiles of the tube differences."""
    qs = torch.linspace(0, 1, count)
    values = torch.quantile(diffs.flatten().float()[:: max(1, diffs.numel() // 100000)], qs)
    above = [float(v) + 1e-6 for v in values.unique()]  # just above a difference drops that tube
    return [0.0] + above


@dataclass
class DecodedViews:
    """The test set decoded once: the loader's batches and every view's tube differences."""

    batches: list[dict[str, Any]]
    diffs: Tensor  # (views, T'-1, H', W')
    size: int  # the test crop size the views are cut at

    @classmethod
    def load(cls, cfg: CfgNode, preprocess: ClipPreprocessor, tubelet: int, patch: int) -> DecodedViews:
        """Decode the configured test split with the config's views."""
        batches, diffs = [], []
        for batch in tqdm(build_loader(cfg, "test"), desc="decode test views", leave=False):
            batches.append(batch)
            video = views_of_test_batch(batch, "cpu", cfg.DATA.TEST_CROP_SIZE)
            if video.shape[0]:
                diffs.append(tube_differences(preprocess(video.flatten(0, 1)), tubelet, patch))
        return cls(batches, torch.cat(diffs), cfg.DATA.TEST_CROP_SIZE)

    def speed_clips(self, preprocess: ClipPreprocessor, count: int) -> Tensor:
        """``count`` real views for timing: the first view of the first videos."""
        firsts = [views_of_test_batch(b, "cpu", self.size)[:, 0] for b in self.batches]
        out = torch.cat([preprocess(v) for v in firsts if v.shape[0]])[:count]
        if out.shape[0] < count:
            raise ValueError(f"the test set has {out.shape[0]} videos, fewer than --speed-batch {count}")
        return out


def evaluate(
    cfg: CfgNode, model: nn.Module, views: DecodedViews, preprocess: ClipPreprocessor
) -> dict[str, float]:
    """top-1 / top-5 (%) with the config's views and ensemble method (the evaluator's code)."""
    records, skipped = collect_view_logits(model, views.batches, preprocess, None, views.size)
    metrics, _, order = video_metrics(records, cfg.TEST.ENSEMBLE_METHOD)
    return {
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "num_videos": len(order),
        "skipped": len(skipped),
    }


@dataclass
class Trained:
    """A model trained with its method (a plot marker): its config and each seed's test_metrics.json."""

    name: str
    config: str
    metrics: list[str]


def parse_trained(items: Iterable[str]) -> list[Trained]:
    """``NAME=CONFIG.yaml:test_metrics.json[,test_metrics.json ...]`` items (one metrics file per seed)."""
    out = []
    for item in items:
        name, _, rest = item.partition("=")
        config, _, metrics = rest.partition(":")
        files = [m for m in metrics.split(",") if m]
        if not (name and config and files):
            raise ValueError(f"--trained {item!r}: use NAME=CONFIG.yaml:test_metrics.json[,...]")
        for path in (config, *files):
            if not Path(path).is_file():
                raise FileNotFoundError(f"--trained {item!r}: no file {path}")
        out.append(Trained(name, config, files))
    return out


def seed_summary(metrics_files: list[str]) -> dict[str, Any]:
    """top-1 / top-5 mean, top-1 sample std (0 for one seed) and the per-seed top-1 of ``metrics_files``."""
    runs = []
    for path in metrics_files:
        with open(path) as f:
            runs.append(json.load(f))
    top1 = [float(m["top1"]) for m in runs]
    top5 = [float(m["top5"]) for m in runs if m.get("top5") is not None]
    return {
        "top1": statistics.fmean(top1),
        "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
        "top1_runs": top1,
        "top5": statistics.fmean(top5) if len(top5) == len(runs) else None,
        "seeds": len(runs),
    }


def sweep(
    cfg: CfgNode,
    checkpoint: str,
    methods: list[str],
    budgets: list[float],
    trained: list[Trained] = (),
    speed_batch: int = 4,
    warmup: int = 3,
    iters: int = 10,
    opts: list[str] = (),
) -> dict[str, Any]:
    """Run the whole grid; returns the JSON-ready report (see the module docstring).

    ``opts`` (KEY VALUE overrides) apply to the trained models' configs too: they must give the
    same clip shape as ``cfg``.
    """
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; use {', '.join(METHODS)}")
    if any(not 0 < b <= 1 for b in budgets):
        raise ValueError(f"budgets are fractions of the ViT's GFLOPs in (0, 1], got {budgets}")
    if cfg.MODEL.ARCH != "vit":
        raise ValueError(f"--cfg must be the trained ViT's config (MODEL.ARCH vit), not {cfg.MODEL.ARCH}")
    device = torch.device("cpu")
    preprocess = ClipPreprocessor(cfg, device)
    kw = vit_kwargs(cfg)
    view = (1, kw["in_chans"], kw["num_frames"], kw["img_size"], kw["img_size"])
    views = DecodedViews.load(cfg, preprocess, kw["tubelet_size"], kw["patch_size"])
    costs = CostModel(cfg, view)
    base_gflops = costs.gflops("vit", None)

    def trained_model(method: str, knob: Any) -> nn.Module:
        model = build_model(method_cfg(cfg, method, knob))
        load_model_weights(model, checkpoint)
        return model.eval()

    base = trained_model("vit", None)
    rows: list[dict[str, Any]] = [
        {"method": "vit", "budget": 1.0, "knob": None, "knob_label": "-", "gflops": base_gflops,
         "fraction": 1.0, **evaluate(cfg, base, views, preprocess)}
    ]  # fmt: skip
    timed: dict[str, nn.Module] = {"vit": base}
    bar = tqdm(total=len(methods) * len(budgets), desc="arena")
    for method in methods:
        for budget in budgets:
            bar.set_postfix(method=method, budget=budget, refresh=True)
            knob, gflops, spread = choose_knob(method, cfg, costs, views.diffs, budget * base_gflops)
            model = trained_model(method, knob)
            row = {
                "method": method,
                "budget": budget,
                "knob": knob,
                "knob_label": knob_label(method, knob),
                "gflops": gflops,
                "fraction": gflops / base_gflops,
                **evaluate(cfg, model, views, preprocess),
            }
            if spread is not None:
                row["rlt_gflops"] = spread
            rows.append(row)
            timed[f"{method}@{budget}"] = model
            bar.update()
    bar.close()
    markers = []
    for t in trained:
        tcfg = load_config(t.config, opts)
        tcfg.defrost()
        tcfg.MODEL.PRETRAINED = ""
        tcfg.freeze()
        torch.manual_seed(0)
        model = build_model(tcfg).eval()
        tkw = vit_kwargs(tcfg)
        tview = (1, tkw["in_chans"], tkw["num_frames"], tkw["img_size"], tkw["img_size"])
        if tcfg.MODEL.ARCH == "rlt":
            tcosts = CostModel(tcfg, tview)
            gflops = statistics.fmean(
                tcosts.rlt_gflops(int(k)) for k in rlt_kept(views.diffs, tcfg.RLT.THRESHOLD)
            )
        else:
            gflops = model_flops(model, tview).total / 1e9
        markers.append(
            {
                "name": t.name,
                "config": t.config,
                "arch": tcfg.MODEL.ARCH,
                "gflops": gflops,
                "fraction": gflops / base_gflops,
                **seed_summary(t.metrics),
            }
        )
        timed[f"trained:{t.name}"] = model
    clips = views.speed_clips(preprocess, speed_batch)
    speed = benchmark_throughput(timed, tuple(clips.shape), warmup, iters, "cpu", "fp32", inputs=clips)
    base_speed = speed["vit"].clips_per_s
    for row in rows:
        key = "vit" if row["method"] == "vit" else f"{row['method']}@{row['budget']}"
        row["clips_per_s"] = speed[key].clips_per_s
        row["clips_per_s_iqr"] = speed[key].clips_per_s_iqr
        row["speedup"] = speed[key].clips_per_s / base_speed
    for m in markers:
        m["clips_per_s"] = speed[f"trained:{m['name']}"].clips_per_s
        m["speedup"] = m["clips_per_s"] / base_speed
    first = speed["vit"]
    return {
        "checkpoint": checkpoint,
        "config_views": f"{cfg.TEST.NUM_ENSEMBLE_VIEWS} clips x {cfg.TEST.NUM_SPATIAL_CROPS} crops, "
        f"{cfg.TEST.ENSEMBLE_METHOD}",
        "base_gflops": base_gflops,
        "flops_convention": "fvcore: 1 multiply-add = 1 FLOP, attention included, batch 1 (one view)",
        "speed_protocol": f"CPU fp32, batch {first.batch_size} real test views, {first.warmup} warm-up + "
        f"{first.iters} timed iterations per model, interleaved; {first.threads} threads; median clips/s",
        "rows": rows,
        "trained": markers,
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The sweep as a markdown table (one row per method x budget, the ViT first)."""
    rows = []
    for r in report["rows"]:
        gf = f"{r['gflops']:.4g}"
        if "rlt_gflops" in r:
            s = r["rlt_gflops"]
            gf += f" ± {s['std']:.2g} [{s['min']:.4g}, {s['max']:.4g}]"
        rows.append([
            r["method"], f"{r['budget']:.2f}", r["knob_label"], gf, f"{r['fraction']:.3f}",
            f"{r['clips_per_s']:.1f}", f"{r['speedup']:.2f}x", f"{r['top1']:.1f}", f"{r['top5']:.1f}",
        ])  # fmt: skip
    for m in report["trained"]:
        rows.append([f"{m['name']} (trained)", "-", m["arch"], f"{m['gflops']:.4g}", f"{m['fraction']:.3f}",
                     f"{m['clips_per_s']:.1f}", f"{m['speedup']:.2f}x", trained_top1(m),
                     "-" if m["top5"] is None else f"{m['top5']:.1f}"])  # fmt: skip
    headers = ["method", "budget", "knob", "GFLOPs/view", "achieved", "clips/s", "speed-up", "top-1", "top-5"]
    return tabulate(rows, headers=headers, tablefmt="github")


def trained_top1(marker: dict[str, Any]) -> str:
    """A trained marker's top-1: the value, or mean ± std (n seeds)."""
    if marker.get("seeds", 1) == 1:
        return f"{marker['top1']:.1f}"
    return f"{marker['top1']:.1f} ± {marker['top1_std']:.1f} ({marker['seeds']} seeds)"


def plot(report: dict[str, Any], out: str) -> None:
    """Two panels: top-1 vs GFLOPs/view and top-1 vs measured clips/s; a curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    base = report["rows"][0]
    methods = list(dict.fromkeys(r["method"] for r in report["rows"][1:]))
    for ax, key, label in (
        (axes[0], "gflops", "GFLOPs per view (fvcore)"),
        (axes[1], "clips_per_s", "CPU clips/s"),
    ):
        colors = {}
        for method in methods:
            pts = sorted((r[key], r["top1"]) for r in report["rows"] if r["method"] == method)
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
            colors[method] = line.get_color()
        ax.scatter(
            [base[key]], [base["top1"]], marker="*", s=160, color="black", label="vit (unreduced)", zorder=5
        )
        for i, m in enumerate(report["trained"]):
            color = colors.get(m["arch"], "black")  # a trained method's marker takes its curve's colour
            std = [m.get("top1_std", 0.0)]
            legend = "trained: mean ± std over seeds" if i == 0 else None
            ax.errorbar(
                [m[key]], [m["top1"]], yerr=std, fmt="D", ms=7, capsize=3, color=color, zorder=5, label=legend
            )
            ax.annotate(m["name"], (m[key], m["top1"]), textcoords="offset points", xytext=(5, 2), fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel(f"top-1 (%), {report['config_views']}")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    title = "Training-free token reduction of one trained ViT"
    if report["trained"]:
        title += " (diamonds: methods trained with its recipe)"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_cli(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """``--cfg FILE --checkpoint CKPT [--methods ...] [--budgets ...] [KEY VALUE ...]``."""
    parser = build_arg_parser(description=description or __doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", required=True, help="the trained ViT's stvideo checkpoint")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--budgets", default="0.8,0.6,0.45,0.35", help="fractions of the ViT's GFLOPs")
    parser.add_argument(
        "--trained",
        nargs="+",
        default=[],
        help="NAME=CONFIG.yaml:test_metrics.json[,...] markers (one metrics file per seed: mean ± std)",
    )
    parser.add_argument(
        "--out", default="output/arena/sweep", help="output stem: STEM.json, STEM.md, STEM.png"
    )
    parser.add_argument("--speed-batch", type=int, default=4, help="real test views per timed forward")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per model")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per model (interleaved)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    args = parse_with_overrides(parser, argv, {"trained": lambda t: "=" in t})
    if not args.cfg_file:
        parser.error("--cfg FILE (the trained ViT's config) is required")
    return args


def main(argv: list[str] | None = None, description: str | None = None) -> dict[str, Any]:
    """Run the sweep and write STEM.json, STEM.md and STEM.png; returns the report."""
    args = parse_cli(argv, description)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.cfg_file, args.opts)
        trained = parse_trained(args.trained)
        report = sweep(
            cfg,
            args.checkpoint,
            [m.strip() for m in args.methods.split(",") if m.strip()],
            [float(b) for b in args.budgets.split(",")],
            trained,
            args.speed_batch,
            args.warmup,
            args.iters,
            args.opts,
        )
    except (ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"sweep_budgets: {e}")
    except CheckpointError as e:
        sys.exit(f"Checkpoint error: {e}")
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    table = markdown_table(report)
    report["config"] = args.cfg_file
    report["overrides"] = args.opts
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(table + "\n")
    plot(report, str(stem.with_suffix(".png")))
    print(table)
    print(f"\n{report['speed_protocol']}\nwritten: {stem}.json, {stem}.md, {stem}.png")
    return report
