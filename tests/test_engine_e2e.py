"""End-to-end runs of tools/run_net.py on a tiny synthetic dataset of real encoded videos."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from stvideo.config import load_config
from stvideo.engine import checkpoint as ckpt
from stvideo.engine import evaluator
from stvideo.engine.trainer import NonFiniteLossError, Trainer
from stvideo.models import build_model
from stvideo.utils.logging import JsonStats
from tests import videos as V

REPO = Path(__file__).resolve().parents[1]
RUN_NET = str(REPO / "tools/run_net.py")
SYNTH_CFG = str(REPO / "configs/synth/vit_t.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cmd(opts: list[str]) -> list[str]:
    return [sys.executable, RUN_NET, "--cfg", SYNTH_CFG, *opts]


def _run(opts: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(opts), capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _stats(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "json_stats.log").read_text().splitlines()]


def kill_after_first_epoch(opts: list[str], out: Path) -> None:
    """Start run_net with ``opts``; SIGKILL it and its loader workers once its epoch-1 checkpoint exists."""
    pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(_cmd(opts), env=ENV, cwd=REPO, start_new_session=True, **pipes)
    first = out / "checkpoints" / ckpt.periodic_name(1)
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job dies, as on a lost node: no orphaned worker lingers
    proc.wait()
    assert proc.returncode == -9, "the run finished before it could be killed"


def test_train_then_test_writes_every_output(tmp_path, tiny_synth_opts):
    out = tmp_path / "run"
    proc = _run([*tiny_synth_opts, "OUTPUT_DIR", str(out)])
    assert "test top-1" in proc.stdout

    saved = load_config(str(out / "config.yaml"))
    assert saved.VIT.DEPTH == 2 and saved.OUTPUT_DIR == str(out)
    assert "Model vit" in (out / "stdout.log").read_text()

    stats = _stats(out)
    assert {"train_iter", "train_epoch", "val", "test_final"} <= {s["_type"] for s in stats}
    epochs = [s for s in stats if s["_type"] == "train_epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for key in ("loss", "top1", "lr", "time_s", "mem_mb", "skipped_videos", "data_wait_frac"):
        assert key in epochs[0], key
    # no workers here: every batch is decoded in the training loop, so the wait is a real, partial share
    assert all(0.0 < e["data_wait_frac"] < 1.0 for e in epochs), epochs
    assert [s["epoch"] for s in stats if s["_type"] == "val"] == [1, 2]

    names = sorted(os.listdir(out / "checkpoints"))
    assert names == ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth", "last.pyth"]
    last = ckpt.load(str(out / "checkpoints/last.pyth"))
    assert last["epoch"] == 2
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "cfg"} <= set(last)

    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["num_videos"] == 10 and metrics["num_views"] == 6
    assert metrics["skipped_videos"] == [] and metrics["num_skipped"] == 0
    final = [s for s in stats if s["_type"] == "test_final"][-1]
    assert final["top1"] == pytest.approx(metrics["top1"], abs=1e-4)
    assert set(metrics["by_ensemble_method"]) == {"prob_mean", "logit_mean", "max"}

    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 10 and len({p["video_id"] for p in preds}) == 10
    for p in preds:
        assert len(p["top5_classes"]) == 5
        assert p["top5_scores"] == sorted(p["top5_scores"], reverse=True)
        assert 0.0 < sum(p["top5_scores"]) <= 1.0 + 1e-6  # mean of softmax
    top1 = 100.0 * sum(p["top5_classes"][0] == p["label"] for p in preds) / len(preds)
    assert top1 == pytest.approx(metrics["top1"])


def _copy_of_synth_data(tmp_path: Path, tiny_synth_opts: list[str]) -> tuple[Path, list[str]]:
    """A private copy of the tiny synthetic dataset (for tests that edit its lists) and the overrides
    pointing at it."""
    data = tmp_path / "data"
    shutil.copytree(tiny_synth_opts[tiny_synth_opts.index("DATA.PATH_TO_DATA_DIR") + 1], data)
    opts = ["DATA.PATH_TO_DATA_DIR", str(data), "DATA.FLIP_LABEL_MAP", str(data / "flip_label_map.json")]
    return data, [*tiny_synth_opts, *opts]


def test_bad_videos_skipped_in_training_left_out_of_val_and_test(tmp_path, tiny_synth_opts):
    """Three broken files in every split: training logs and counts each skip, val and test leave them
    out of the metrics; two view counts are evaluated in one run."""
    data, opts = _copy_of_synth_data(tmp_path, tiny_synth_opts)
    good = sorted((data / "videos" / "test").rglob("*.mp4"))[0]
    (data / "broken").mkdir()
    bad = [
        V.write_truncated(data / "broken" / "cut.mp4", good),
        V.write_empty(data / "broken" / "empty.mp4"),
        V.write_not_video(data / "broken" / "page.mp4"),
    ]
    bad_ids = [f"broken/{p.name}" for p in bad]
    for split in ("train", "val", "test"):
        with open(data / f"{split}.csv", "a") as f:
            f.writelines(f"{video_id} {i}\n" for i, video_id in enumerate(bad_ids))
    out = tmp_path / "run"
    _run([*opts, "OUTPUT_DIR", str(out), "TEST.NUM_TEMPORAL_CLIPS", "[1]"])

    stats, log = _stats(out), (out / "stdout.log").read_text()
    train_skips = sum(s["skipped_videos"] for s in stats if s["_type"] == "train_epoch")
    assert train_skips == log.count("skipping undecodable train video") > 0
    vals = [s for s in stats if s["_type"] == "val"]
    assert [(v["num_videos"], v["skipped_videos"]) for v in vals] == [(10, 3), (10, 3)]

    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["num_videos"] == 10 and metrics["num_skipped"] == 3
    assert [s["video_id"] for s in metrics["skipped_videos"]] == bad_ids
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 10 and not {p["video_id"] for p in preds} & set(bad_ids)
    top1 = 100.0 * sum(p["top5_classes"][0] == p["label"] for p in preds) / len(preds)
    assert top1 == pytest.approx(metrics["top1"])  # over the 10 decodable videos only
    by_clips = metrics["by_num_temporal_clips"]
    assert {k: (v["num_views"], v["num_videos"], v["num_skipped"]) for k, v in by_clips.items()} == {
        "2": (6, 10, 3),
        "1": (3, 10, 3),
    }


def test_all_val_and_test_videos_undecodable_stops_with_a_clear_error(tmp_path, tiny_synth_opts):
    """A wrong path prefix for val/test is a setup error, not a 0 % result."""
    data, opts = _copy_of_synth_data(tmp_path, tiny_synth_opts)
    for split in ("val", "test"):
        (data / f"{split}.csv").write_text("moved/a.mp4 0\nmoved/b.mp4 1\n")
    cfg = load_config(SYNTH_CFG, [*opts, "OUTPUT_DIR", str(tmp_path / "out")])
    model = build_model(cfg)
    os.makedirs(cfg.OUTPUT_DIR)
    with pytest.raises(RuntimeError, match="none of the 2 val videos could be decoded"):
        Trainer(cfg, model, torch.device("cpu"), JsonStats(cfg.OUTPUT_DIR)).validate(0)
    with pytest.raises(RuntimeError, match=r"none of the 2 test videos .*moved/a.mp4: file not found"):
        evaluator.test_views(cfg, model, torch.device("cpu"))


def test_killed_run_resumes_to_identical_weights(tmp_path, tiny_synth_opts):
    """SIGKILL after epoch 1, AUTO_RESUME, compare with an uninterrupted run: bitwise equal."""
    opts = [*tiny_synth_opts, "SOLVER.MAX_EPOCH", "3", "TEST.ENABLE", "False"]
    full = tmp_path / "full"
    _run([*opts, "OUTPUT_DIR", str(full)])

    killed = tmp_path / "killed"
    # One loader worker here vs none above: augmentation must not depend on the worker layout.
    resumed_opts = [*opts, "OUTPUT_DIR", str(killed), "DATA_LOADER.NUM_WORKERS", "1"]
    kill_after_first_epoch(resumed_opts, killed)
    assert not (killed / "checkpoints" / ckpt.periodic_name(3)).exists()

    resumed = _run(resumed_opts)
    assert "Resumed from" in resumed.stdout
    a = ckpt.load(str(full / "checkpoints/last.pyth"))
    b = ckpt.load(str(killed / "checkpoints/last.pyth"))
    assert a["epoch"] == b["epoch"] == 3
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path, tiny_synth_opts):
    out = tmp_path / "nan"
    cfg = load_config(SYNTH_CFG, [*tiny_synth_opts, "OUTPUT_DIR", str(out), "TRAIN.EVAL_PERIOD", "0"])
    torch.manual_seed(0)
    model = build_model(cfg)
    epoch_now = {"epoch": 0}
    model.set_epoch = lambda e: epoch_now.update(epoch=e)  # the trainer calls this every epoch
    # From the second epoch on the head emits NaN, as a diverging run would.
    model.head.register_forward_hook(lambda m, i, o: o * float("nan") if epoch_now["epoch"] >= 1 else o)
    os.makedirs(out)
    trainer = Trainer(cfg, model, torch.device("cpu"), JsonStats(str(out)))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 1;.*last\.pyth"):
        trainer.train()
    good = ckpt.load(str(out / "checkpoints/last.pyth"))
    assert good["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in good["model"].values())
    assert not (out / "checkpoints" / ckpt.periodic_name(2)).exists()


def _validate_on_rank(rank: int, opts: list[str], init_file: str, out: str) -> None:
    """One gloo rank: real DistributedDataParallel around the conv-stem ViT (BatchNorm buffers),
    ``Trainer.validate`` once, its stats written to ``out/rank<r>.json``."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    cfg = load_config(SYNTH_CFG, opts)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build_model(cfg))
    statistics = [b for b in model.module.buffers() if b.is_floating_point()]

    def drift_apart() -> None:  # as if each rank's BatchNorm had seen its own batches
        for buffer in statistics:
            buffer.fill_(1.0 + rank)

    def values() -> list[float]:
        return sorted({v for b in statistics for v in b.flatten().tolist()})

    drift_apart()
    stats = Trainer(cfg, model, torch.device("cpu"), JsonStats(out)).validate(0)
    stats["buffer_values"] = values()
    drift_apart()
    stats["test_videos"] = evaluator.test_views(cfg, model.module, torch.device("cpu"))["num_videos"]
    stats["buffer_values_after_test"] = values()
    Path(out, f"rank{rank}.json").write_text(json.dumps(stats))
    torch.distributed.destroy_process_group()


def test_ddp_evaluation_rank_without_batches_and_rank0_statistics(tmp_path, tiny_synth_opts):
    """1 val video on 2 ranks: rank 1 has no batch. Forwarding through DDP would broadcast the BatchNorm
    buffers at rank 0's first forward, a collective rank 1 never joins (a hang until the timeout).
    Validation and testing use rank 0's BatchNorm statistics on both ranks (the ones a checkpoint saves)."""
    data, opts = _copy_of_synth_data(tmp_path, tiny_synth_opts)
    lines = (data / "val.csv").read_text().splitlines()
    (data / "val.csv").write_text(lines[0] + "\n")
    opts += ["OUTPUT_DIR", str(tmp_path), "TRAIN.BATCH_SIZE", "2"]
    assert load_config(SYNTH_CFG, opts).MODEL.PATCH_EMBED == "conv"  # has buffers
    torch.multiprocessing.spawn(_validate_on_rank, (opts, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["num_videos"] == b["num_videos"] == 1
    assert a["buffer_values"] == b["buffer_values"] == [1.0]
    assert a["test_videos"] == b["test_videos"] == 10
    assert a["buffer_values_after_test"] == b["buffer_values_after_test"] == [1.0]


def test_ddp_two_processes_match_single_process(tmp_path, tiny_synth_opts):
    """torchrun with 2 gloo ranks x 4 clips == 1 process x 8 clips; test views are not double counted."""
    opts = [*tiny_synth_opts, "MODEL.DROP_PATH_RATE", "0.0", "SOLVER.MAX_EPOCH", "1"]
    # The conv stem's BatchNorm normalises each rank's own batch, so only the linear embedding is
    # batch-split invariant.
    opts += ["MODEL.PATCH_EMBED", "linear"]
    single = tmp_path / "single"
    _run([*opts, "OUTPUT_DIR", str(single)])
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        cmd + _cmd([*opts, "OUTPUT_DIR", str(ddp)])[1:],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    a = ckpt.load(str(single / "checkpoints/last.pyth"))["model"]
    b = ckpt.load(str(ddp / "checkpoints/last.pyth"))["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    ma = json.loads((single / "test_metrics.json").read_text())
    mb = json.loads((ddp / "test_metrics.json").read_text())
    assert mb["num_videos"] == ma["num_videos"] == 10
    pa = [json.loads(x)["top5_classes"] for x in (single / "predictions.jsonl").read_text().splitlines()]
    pb = [json.loads(x)["top5_classes"] for x in (ddp / "predictions.jsonl").read_text().splitlines()]
    assert pa == pb
