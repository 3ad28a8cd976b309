"""Multi-view aggregation and cross-rank merging (one process and two real gloo ranks), on hand-made
logits with known answers."""

import json
import math
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from stvideo.engine.evaluator import aggregate_views, gather_records, topk_correct, video_metrics


def _logits():
    # One video, two views, three classes. View 0 is very sure of class 0; view 1 mildly prefers 1.
    return torch.tensor([[[10.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])


def test_prob_mean_matches_hand_computation():
    p0 = torch.tensor([10.0, 0.0, 0.0]).softmax(0)
    p1 = torch.tensor([0.0, 1.0, 0.0]).softmax(0)
    torch.testing.assert_close(aggregate_views(_logits(), "prob_mean")[0], (p0 + p1) / 2)


def test_logit_mean_and_max():
    torch.testing.assert_close(aggregate_views(_logits(), "logit_mean"), torch.tensor([[5.0, 0.5, 0.0]]))
    mx = aggregate_views(_logits(), "max")[0]
    e = math.e
    assert mx[1].item() == pytest.approx(e / (e + 2))  # class 1 best seen in view 1
    assert mx[0].item() == pytest.approx(1 / (1 + 2 * math.exp(-10)))


def test_methods_can_disagree():
    # Three views where mean-logit, mean-prob and max-prob each pick a different class.
    logits = torch.tensor([[[4.0, 4.0, 2.0], [3.0, 1.0, -13.0], [-8.0, -5.0, 6.0]]])
    assert aggregate_views(logits, "logit_mean").argmax().item() == 1
    assert aggregate_views(logits, "prob_mean").argmax().item() == 0
    assert aggregate_views(logits, "max").argmax().item() == 2


def test_topk_correct_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])  # hit at 1; hit at 2; miss
    c1, c2 = topk_correct(logits, labels, (1, 2))
    assert c1.item() == 1 and c2.item() == 2


def test_video_metrics_and_single_rank_gather():
    recs = {
        0: {"video_id": "a", "label": 0, "logits": torch.tensor([[2.0, 0.0], [1.0, 0.0]])},
        1: {"video_id": "b", "label": 0, "logits": torch.tensor([[0.0, 2.0], [0.0, 1.0]])},
    }
    metrics, scores, order = video_metrics(recs, "prob_mean")
    assert order == [0, 1] and metrics["top1"] == 50.0 and metrics["top5"] == 100.0
    assert scores.shape == (2, 2)
    merged, skipped = gather_records(recs, [{"index": 5, "video_id": "c"}])
    assert sorted(merged) == [0, 1] and skipped == [{"index": 5, "video_id": "c"}]


def _gather_on_rank(rank: int, init_file: str, out_dir: str, duplicate: bool) -> None:
    """Rank 0 holds videos 0 and 2 (and skipped video 4), rank 1 holds video 1, or video 2 again."""
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    logits = torch.full((3, 2), float(rank))
    mine = [0, 2] if rank == 0 else [2 if duplicate else 1]
    records = {i: {"video_id": f"v{i}", "label": i % 2, "logits": logits} for i in mine}
    skipped = [{"index": 4, "video_id": "v4"}] if rank == 0 else []
    try:
        merged, all_skipped = gather_records(records, skipped)
        skipped_ids = [s["video_id"] for s in all_skipped]
        result = {"merged": sorted(merged), "first": merged[1]["logits"][0, 0].item(), "skipped": skipped_ids}
    except RuntimeError as e:
        result = {"error": str(e)}
    Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.parametrize("duplicate", [False, True])
def test_two_gloo_ranks_gather_by_index(tmp_path, duplicate):
    """Uneven shards merge by dataset index on every rank; a video tested on two ranks is an error."""
    torch.multiprocessing.start_processes(
        _gather_on_rank,
        args=(str(tmp_path / "init"), str(tmp_path), duplicate),
        nprocs=2,
        start_method="fork",
    )
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    if duplicate:
        assert all(r == {"error": "Video v2 (index 2) was tested on two ranks"} for r in results)
    else:
        assert all(r == {"merged": [0, 1, 2], "first": 1.0, "skipped": ["v4"]} for r in results)
