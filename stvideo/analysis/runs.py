"""Training curves of runs from their ``json_stats.log``: loss, top-1 and learning rate per epoch.

``read_run`` turns one OUTPUT_DIR into per-epoch series (train loss / top-1 / lr from ``train_epoch``
records, val loss / top-1 from ``val`` records, the final test top-1 from ``test_final``); a run
that resumed and wrote an epoch twice keeps the last record of it. ``plot_runs`` overlays several
runs, one colour per run, named by their output folder and arch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunCurves:
    """Per-epoch series of one run: ``{series: {epoch: value}}`` plus its name, arch and test top-1."""

    name: str
    arch: str = ""
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    test_top1: float | None = None

    def points(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of ``key`` (e.g. ``train_loss``, ``val_top1``, ``lr``) in epoch order."""
        s = self.series.get(key, {})
        epochs = sorted(s)
        return epochs, [s[e] for e in epochs]


SERIES = {"train_epoch": ("loss", "top1", "lr"), "val": ("loss", "top1")}


def read_run(output_dir: str) -> RunCurves:
    """Curves of the run in ``output_dir``; FileNotFoundError / ValueError naming the file and line."""
    path = os.path.join(output_dir, "json_stats.log")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {output_dir} a run's OUTPUT_DIR?")
    run = RunCurves(name=os.path.basename(os.path.normpath(output_dir)))
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({e.msg})") from None
            kind = rec.get("_type")
            if kind == "run_info":
                run.arch = rec.get("arch", "")
            elif kind == "test_final":
                run.test_top1 = rec.get("top1")
            elif kind in SERIES:
                prefix = "train" if kind == "train_epoch" else "val"
                for key in SERIES[kind]:
                    if key in rec:
                        name = "lr" if key == "lr" else f"{prefix}_{key}"
                        run.series.setdefault(name, {})[int(rec["epoch"])] = float(rec[key])
    return run


def plot_runs(runs: list[RunCurves], out: str | Path) -> Path:
    """PNG of loss, top-1 and learning rate vs epoch for ``runs`` (train solid, val dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for n, run in enumerate(runs):
        colour = f"C{n % 10}"
        label = f"{run.name} ({run.arch})" if run.arch else run.name
        for ax, key, style in (
            (axes[0], "train_loss", "-"),
            (axes[0], "val_loss", "--"),
            (axes[1], "train_top1", "-"),
            (axes[1], "val_top1", "--"),
            (axes[2], "lr", "-"),
        ):
            x, y = run.points(key)
            if x:
                marker = "o" if key.startswith("val") else None
                ax.plot(x, y, style, color=colour, marker=marker, ms=3, label=None if marker else label)
        if run.test_top1 is not None:
            last = max(run.points("train_top1")[0] or [0])
            axes[1].plot([last], [run.test_top1], "*", color=colour, ms=10)
    titles = ("loss (train -, val --)", "top-1 % (train -, val --, test *)", "learning rate")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
