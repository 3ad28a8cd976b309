"""TRAIN.STRATEGY fsdp with 2 real gloo ranks: FSDP2 against DDP for every registered arch, per-rank state
memory, and end-to-end runs with sharded (DCP) checkpoints that resume exactly and reshard 2 -> 1, 1 -> 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from stvideo.config import load_config
from stvideo.engine import checkpoint as ckpt
from stvideo.engine import sharded_checkpoint as sharded
from stvideo.engine import strategy
from stvideo.models import MODEL_REGISTRY, build_model, protocol
from tests.test_registry import tiny_cfg

REPO = Path(__file__).resolve().parents[1]
SYNTH_CFG = str(REPO / "configs/synth/vit_t.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ARCHS = sorted(name for name, _ in MODEL_REGISTRY)
STEPS = 3


def _steps_on_rank(rank: int, init_file: str, out: str) -> None:
    """Every arch: the same initial weights under DDP and under FSDP2, STEPS AdamW steps on this rank's
    half of each batch; rank 0 writes the largest weight difference and both ranks' state bytes."""
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=timedelta(seconds=120)
    )
    torch.set_num_threads(1)
    results = {}
    for arch in ARCHS:
        cfg = tiny_cfg(arch)
        models, opts, sizes = {}, {}, {}
        for name in ("ddp", "fsdp"):
            cfg.TRAIN.STRATEGY = name
            torch.manual_seed(0)
            model = strategy.wrap_model(cfg, build_model(cfg).train(), torch.device("cpu"))
            models[name] = model
            opts[name] = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for step in range(STEPS):
            clips = torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(step))
            target = torch.tensor([0, 1, 2, 3])[2 * rank : 2 * rank + 2]
            for name, model in models.items():
                torch.manual_seed(100 * step + rank)  # same random drops / random keep-k in both
                logits = model(clips[2 * rank : 2 * rank + 2])
                opts[name].zero_grad()
                protocol.classification_loss(logits, target).backward()
                opts[name].step()
        for name in models:
            sizes[name] = strategy.local_state_bytes(models[name], opts[name])
        full = strategy.full_state_dict(models["fsdp"])
        ref = models["ddp"].module.state_dict()
        diff = max(float((full[k] - ref[k]).abs().max()) for k in ref if ref[k].is_floating_point())
        init = build_model(tiny_cfg(arch)).state_dict()
        moved = max(float((ref[k] - v).abs().max()) for k, v in init.items() if v.is_floating_point())
        results[arch] = {"diff": diff, "moved": moved, "keys": sorted(full) == sorted(ref), **sizes}
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_vs_ddp(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("fsdp")
    out = tmp / "results.json"
    torch.multiprocessing.spawn(_steps_on_rank, (str(tmp / "init"), str(out)), nprocs=2)
    return json.loads(out.read_text())


@pytest.mark.parametrize("arch", ARCHS)
def test_fsdp_weights_equal_ddp_for_every_arch(fsdp_vs_ddp: dict, arch: str) -> None:
    r = fsdp_vs_ddp[arch]
    assert r["keys"]
    assert r["moved"] > 1e-3  # training moved the weights: equality below is not of untrained models
    # Same maths, different reduction order (reduce-scatter vs all-reduce): float rounding, which Adam can
    # turn into steps of up to ~lr; a missing gradient reduction or a wrong shard is off by far more.
    assert r["diff"] < 1e-4, f"{arch}: FSDP and DDP weights differ by {r['diff']}"


def test_fsdp_halves_per_rank_weights_and_adamw_state(fsdp_vs_ddp: dict) -> None:
    for arch in ("vit", "stvit", "evovit"):
        r = fsdp_vs_ddp[arch]
        ddp = r["ddp"]["params"] + r["ddp"]["optimizer"]
        fsdp = r["fsdp"]["params"] + r["fsdp"]["optimizer"]
        assert r["ddp"]["optimizer"] >= 2 * r["ddp"]["params"]  # AdamW: exp_avg + exp_avg_sq
        assert fsdp / ddp <= 0.55, f"{arch}: FSDP keeps {fsdp / ddp:.3f} of DDP's state per rank"


# ----------------------------------------------------------------------------- end to end, DCP
TINY_RUN = ["MODEL.DROP_PATH_RATE", "0.0", "MODEL.PATCH_EMBED", "linear", "TEST.ENABLE", "False"]
TINY_RUN += ["TRAIN.EVAL_PERIOD", "1", "TRAIN.CHECKPOINT_PERIOD", "1", "TRAIN.STRATEGY", "fsdp"]


def _run_net(opts: list[str], ranks: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable]
    if ranks > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    cmd += [str(REPO / "tools/run_net.py"), "--cfg", SYNTH_CFG, *opts]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _weights(out: Path, tmp: Path, name: str = sharded.LAST) -> dict[str, torch.Tensor]:
    """A run's weights (``last.dcp`` or an epoch folder ``name``), through the converter tool."""
    dst = tmp / f"{out.name}_{name}.pyth"
    cmd = [
        sys.executable,
        str(REPO / "tools/convert_checkpoint.py"),
        "--src",
        str(out / "checkpoints" / name),
    ]
    proc = subprocess.run(cmd + ["--out", str(dst)], capture_output=True, text=True, env=ENV, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = ckpt.load(str(dst))
    return state["model"]


def _from_epoch_1(src: Path, dst: Path) -> None:
    """What a run killed during epoch 2 leaves: checkpoints up to epoch 1, ``last.dcp`` on epoch 1."""
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copytree(
        src / "checkpoints" / sharded.epoch_dir_name(1), dst / "checkpoints" / sharded.epoch_dir_name(1)
    )
    os.symlink(sharded.epoch_dir_name(1), dst / "checkpoints" / sharded.LAST)


def _resumed_epoch(proc: subprocess.CompletedProcess) -> int:
    lines = [x for x in proc.stdout.splitlines() + proc.stderr.splitlines() if "Resumed from" in x]
    assert lines, proc.stdout[-2000:]
    return int(lines[0].rsplit("completed epochs: ", 1)[1].rstrip(")"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_sharded_checkpoints_resume_exactly_and_reshard(tmp_path, tiny_synth_opts):
    """3 epochs on 2 FSDP ranks, uninterrupted (A). From A's epoch-1 checkpoint: resumed on 2 ranks (B,
    bitwise equal to A: same shards, same reduction order, RNG and data order restored), on 1 process
    (C, 2 -> 1) and, from a 1-process run's epoch 1 (D), on 2 ranks (E, 1 -> 2). A resharded run equals
    the uninterrupted one up to the float rounding that distinguishes 1 process from 2 ranks (gradient
    averaging order), as DDP does (tests/test_engine_e2e.py)."""
    opts = [*tiny_synth_opts, *TINY_RUN, "SOLVER.MAX_EPOCH", "3"]
    a, b, c, d, e = (tmp_path / n for n in "abcde")
    _run_net([*opts, "OUTPUT_DIR", str(a)], 2)
    names = sorted(p.name for p in (a / "checkpoints").iterdir())
    assert names == [sharded.epoch_dir_name(i) for i in (1, 2, 3)] + [sharded.LAST]
    assert os.readlink(a / "checkpoints" / sharded.LAST) == sharded.epoch_dir_name(3)
    final = _weights(a, tmp_path)
    assert _max_diff(final, _weights(a, tmp_path, sharded.epoch_dir_name(1))) > 1e-3  # moved after epoch 1

    _from_epoch_1(a, b)
    assert _resumed_epoch(_run_net([*opts, "OUTPUT_DIR", str(b)], 2)) == 1
    resumed = _weights(b, tmp_path)
    for k in final:
        assert torch.equal(resumed[k], final[k]), k

    _from_epoch_1(a, c)
    assert _resumed_epoch(_run_net([*opts, "OUTPUT_DIR", str(c)], 1)) == 1
    assert _max_diff(_weights(c, tmp_path), final) < 1e-3

    _run_net([*opts, "OUTPUT_DIR", str(d)], 1)
    _from_epoch_1(d, e)
    assert _resumed_epoch(_run_net([*opts, "OUTPUT_DIR", str(e)], 2)) == 1
    assert _max_diff(_weights(e, tmp_path), _weights(d, tmp_path)) < 1e-3
    stats = [json.loads(x) for x in (e / "json_stats.log").read_text().splitlines()]
    assert [x["world_size"] for x in stats if x["_type"] == "run_info"] == [2]
    assert sorted(x["epoch"] for x in stats if x["_type"] == "train_epoch") == [2, 3]


def test_converted_checkpoint_serves_test_and_pretrained(tmp_path, tiny_synth_opts):
    """A 2-rank FSDP run's sharded checkpoint, converted to .pyth, tests through TEST.CHECKPOINT_FILE_PATH
    with the run's own predictions and initialises a model through MODEL.PRETRAINED."""
    opts = [
        *tiny_synth_opts,
        "MODEL.DROP_PATH_RATE",
        "0.0",
        "TRAIN.STRATEGY",
        "fsdp",
        "SOLVER.MAX_EPOCH",
        "1",
    ]
    opts += ["MODEL.PATCH_EMBED", "linear"]  # a tube kernel tells the pretrained filter the file is video
    run = tmp_path / "run"
    _run_net([*opts, "OUTPUT_DIR", str(run)], 2)
    weights = _weights(run, tmp_path)
    pyth = tmp_path / f"run_{sharded.LAST}.pyth"  # written by _weights
    test_only = tmp_path / "test_only"
    _run_net(
        [
            *opts,
            "OUTPUT_DIR",
            str(test_only),
            "TRAIN.ENABLE",
            "False",
            "TEST.CHECKPOINT_FILE_PATH",
            str(pyth),
        ],
        1,
    )
    preds = [(run / "predictions.jsonl"), (test_only / "predictions.jsonl")]
    a, b = ([json.loads(x)["top5_classes"] for x in p.read_text().splitlines()] for p in preds)
    assert a == b and len(a) == 10
    cfg = load_config(SYNTH_CFG, [*opts, "MODEL.PRETRAINED", str(pyth)])
    model = build_model(cfg)
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
