"""Multi-view testing: every view's logits -> one score per video -> top-1/top-5, files.

Each test batch holds all V = clips x crops views of its videos (decoded once). Ranks hold
disjoint, unpadded shards of the videos; their per-video logits are gathered by dataset index,
and a video seen twice is an error rather than a silently double-counted view.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import Tensor, nn
from tqdm import tqdm

from stvideo.data import build_loader
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.data.transforms import views_of_test_batch
from stvideo.models import protocol
from stvideo.utils.distributed import all_gather_objects, broadcast_buffers, is_main_process

logger = logging.getLogger(__name__)


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...]) -> list[Tensor]:
    """Number of samples whose label is among the top-k scores, for each k."""
    top = logits.topk(max(ks), dim=1).indices
    hit = top.eq(labels[:, None])
    return [hit[:, :k].any(dim=1).sum().float() for k in ks]


def aggregate_views(view_logits: Tensor, method: str) -> Tensor:
    """(N, V, K) logits of V views -> (N, K) video scores.

    prob_mean: mean of softmax (VideoMAE; default), logit_mean: mean of logits (TimeSformer),
    max: max of softmax over views.
    """
    if method == "prob_mean":
        return view_logits.softmax(-1).mean(1)
    if method == "logit_mean":
        return view_logits.mean(1)
    if method == "max":
        return view_logits.softmax(-1).amax(1)
    raise ValueError(f"unknown ensemble method {method!r}")


@torch.inference_mode()
def batch_view_logits(
    model: nn.Module, video: Tensor, preprocess: ClipPreprocessor, amp_dtype: torch.dtype | None
) -> Tensor:
    """(B, V, C, T, H, W) uint8 views -> (B, V, K) float32 logits on the CPU (the model in eval mode)."""
    b, v = video.shape[:2]
    device = preprocess.device
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(preprocess(video.flatten(0, 1)))
    return protocol.main_logits(out).float().view(b, v, -1).cpu()


@torch.inference_mode()
def collect_view_logits(
    model: nn.Module,
    loader: Any,
    preprocess: ClipPreprocessor,
    amp_dtype: torch.dtype | None,
    size: int,
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """This rank's {index: {video_id, label, logits (V, K), damage}} and its skipped videos; ``loader``
    yields test batches (any iterable of them), whose views are cut at ``size``."""
    device = preprocess.device
    model.eval()
    records: dict[int, dict[str, Any]] = {}
    skipped: list[dict[str, Any]] = []
    bar = tqdm(loader, desc="test", disable=not is_main_process(), leave=False, mininterval=2.0)
    damaged = 0
    for batch in bar:
        skipped += batch.get("skipped", [])
        damage = batch.get("damage", [None] * len(batch["label"]))
        damaged += sum(d is not None for d in damage) + sum("damage" in s for s in batch.get("skipped", []))
        if skipped or damaged:
            bar.set_postfix(skipped=len(skipped), damaged=damaged, refresh=False)
        video = views_of_test_batch(batch, device, size)  # the views are cut on the device
        if video.shape[0] == 0:
            continue
        logits = batch_view_logits(model, video, preprocess, amp_dtype)
        for i in range(len(logits)):
            idx = int(batch["index"][i])
            records[idx] = {
                "video_id": batch["video_id"][i],
                "label": int(batch["label"][i]),
                "logits": logits[i],
                "damage": damage[i],
            }
    return records, skipped


def gather_records(
    records: dict[int, dict[str, Any]], skipped: list[dict[str, Any]]
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """Merge every rank's records by dataset index; a duplicated index is an error."""
    merged: dict[int, dict[str, Any]] = {}
    all_skipped: list[dict[str, Any]] = []
    for rank_records, rank_skipped in all_gather_objects((records, skipped)):
        for idx, rec in rank_records.items():
            if idx in merged:
                raise RuntimeError(f"Video {rec['video_id']} (index {idx}) was tested on two ranks")
            merged[idx] = rec
        all_skipped += rank_skipped
    return merged, sorted(all_skipped, key=lambda s: s["index"])


def video_metrics(
    records: dict[int, dict[str, Any]], method: str
) -> tuple[dict[str, float], Tensor, list[int]]:
    """top-1/top-5 (%) of aggregated scores; also the (N, K) scores and indices in order."""
    order = sorted(records)
    if not order:
        return {"top1": 0.0, "top5": 0.0}, torch.empty(0), order
    scores = aggregate_views(torch.stack([records[i]["logits"] for i in order]), method)
    labels = torch.tensor([records[i]["label"] for i in order])
    k = min(5, scores.shape[1])
    c1, c5 = topk_correct(scores, labels, (1, k))
    n = len(order)
    return {"top1": 100.0 * float(c1) / n, "top5": 100.0 * float(c5) / n}, scores, order


def test_views(
    cfg: CfgNode, model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Test with the configured views (and any extra TEST.NUM_TEMPORAL_CLIPS counts).

    Rank 0 writes ``test_metrics.json`` and ``predictions.jsonl`` (configured view count,
    configured ensemble method) into OUTPUT_DIR and returns the metrics.
    """
    broadcast_buffers(model)  # after DDP training each rank's BatchNorm statistics differ; use rank 0's
    clip_counts = [cfg.TEST.NUM_ENSEMBLE_VIEWS]
    clip_counts += [n for n in cfg.TEST.NUM_TEMPORAL_CLIPS if n not in clip_counts]
    by_clips: dict[str, Any] = {}
    main: dict[str, Any] = {}
    preprocess = ClipPreprocessor(cfg, device)
    for n_clips in clip_counts:
        run_cfg = cfg.clone()
        run_cfg.defrost()
        run_cfg.TEST.NUM_ENSEMBLE_VIEWS = n_clips
        run_cfg.freeze()
        t0 = time.perf_counter()
        loader = build_loader(run_cfg, "test")
        records, skipped = gather_records(
            *collect_view_logits(model, loader, preprocess, amp_dtype, cfg.DATA.TEST_CROP_SIZE)
        )
        if skipped and not records:
            raise RuntimeError(
                f"none of the {len(skipped)} test videos could be decoded, e.g. {skipped[0]['error']}; "
                "check DATA.PATH_PREFIX / DATA.PATH_TO_DATA_DIR and run tools/check_videos.py"
            )
        damaged = damaged_videos(records, skipped)
        num_views = n_clips * cfg.TEST.NUM_SPATIAL_CROPS
        by_method = {m: video_metrics(records, m)[0] for m in ("prob_mean", "logit_mean", "max")}
        metrics, scores, order = video_metrics(records, cfg.TEST.ENSEMBLE_METHOD)
        metrics.update(
            num_videos=len(order),
            num_views=num_views,
            num_temporal_clips=n_clips,
            num_spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS,
            ensemble_method=cfg.TEST.ENSEMBLE_METHOD,
            by_ensemble_method=by_method,
            num_skipped=len(skipped),
            skipped_videos=skipped,
            num_damaged=len(damaged),
            damaged_videos=damaged,
            time_s=time.perf_counter() - t0,
        )
        by_clips[str(n_clips)] = {
            k: metrics[k]
            for k in (
                "top1",
                "top5",
                "num_views",
                "num_videos",
                "num_skipped",
                "num_damaged",
                "by_ensemble_method",
            )
        }
        if skipped:
            logger.warning(
                "%d test videos could not be decoded and are excluded from the metrics: %s",
                len(skipped),
                ", ".join(str(s["video_id"]) for s in skipped[:20]),
            )
        if damaged:
            used = sum(d["used"] for d in damaged)
            logger.warning(
                "%d test videos are damaged (%d scored, %d left out; DATA.ON_DAMAGED %s): %s",
                len(damaged),
                used,
                len(damaged) - used,
                cfg.DATA.ON_DAMAGED,
                ", ".join(f"{d['video_id']} ({d['reason']})" for d in damaged[:5]),
            )
        logger.info(
            "Test %dx%d views, %s: top-1 %.2f  top-5 %.2f  (%d videos, %d skipped)",
            n_clips,
            cfg.TEST.NUM_SPATIAL_CROPS,
            cfg.TEST.ENSEMBLE_METHOD,
            metrics["top1"],
            metrics["top5"],
            len(order),
            len(skipped),
        )
        if not main:
            main = metrics
            if is_main_process():
                _write_predictions(cfg.OUTPUT_DIR, records, scores, order)
    main["by_num_temporal_clips"] = by_clips
    if is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "test_metrics.json"), "w") as f:
            json.dump(main, f, indent=2)
    return main


def damaged_videos(records: dict[int, dict[str, Any]], skipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Damaged test videos by index: ``{index, video_id, path, reason, used}``; ``used`` False when
    DATA.ON_DAMAGED skip left the video out (it is then also in ``skipped_videos``)."""
    rows = [
        {"index": i, "video_id": r["video_id"], **r["damage"], "used": True}
        for i, r in records.items()
        if r.get("damage")
    ]
    rows += [
        {"index": s["index"], "video_id": s["video_id"], **s["damage"], "used": False}
        for s in skipped
        if s.get("damage")
    ]
    return sorted(rows, key=lambda d: d["index"])


def _write_predictions(
    output_dir: str, records: dict[int, dict[str, Any]], scores: Tensor, order: list[int]
) -> None:
    """One JSON line per video: id, label, top-5 classes and their aggregated scores."""
    path = os.path.join(output_dir, "predictions.jsonl")
    with open(path, "w") as f:
        for row, idx in enumerate(order):
            top = scores[row].topk(min(5, scores.shape[1]))
            rec = records[idx]
            line = {
                "video_id": rec["video_id"],
                "index": idx,
                "label": rec["label"],
                "top5_classes": top.indices.tolist(),
                "top5_scores": [round(s, 6) for s in top.values.tolist()],
            }
            f.write(json.dumps(line) + "\n")
