"""Real multi-node training through tools/submit.py: a local two-node SLURM cluster (slurm/local_cluster.sh),
submitit, torch.distributed over gloo, the synthetic dataset. Checks that DDP on 2 nodes x 1 task
gives the weights of one process with the same global batch, and that a job interrupted by SLURM's
preemption signal requeues itself, resumes from its checkpoint and ends with the uninterrupted weights.
The --local test needs no cluster: the same job through submitit's local executor (2 CPU tasks)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
# A tiny ViT on 40 tiny synthetic videos: 5 iterations of global batch 8 per epoch.
TINY = [
    "DATA.FLIP_LABEL_MAP", "", "DATA.RANDOM_FLIP", "False", "DATA.NUM_FRAMES", "4",
    "VIT.EMBED_DIM", "32", "VIT.DEPTH", "2", "VIT.NUM_HEADS", "2",
    "SYNTH.NUM_TRAIN_PER_CLASS", "4", "SYNTH.NUM_VAL_PER_CLASS", "1", "SYNTH.NUM_TEST_PER_CLASS", "1",
    "SYNTH.NUM_FRAMES", "16", "SYNTH.SIZE", "32",
    "SOLVER.MAX_EPOCH", str(EPOCHS), "SOLVER.WARMUP_EPOCHS", "1.0", "MODEL.DROP_PATH_RATE", "0.0",
    "DATA_LOADER.NUM_WORKERS", "0", "TEST.ENABLE", "False", "TRAIN.EVAL_PERIOD", "0",
    "TRAIN.BATCH_SIZE", "8", "TRAIN.CHECKPOINT_PERIOD", "1",
    "MODEL.PATCH_EMBED", "linear",  # the conv stem's BatchNorm sees per-rank batches: not split-invariant
]  # fmt: skip


def _cluster_reason() -> str | None:
    """Why the SLURM tests cannot run here, or None when the local cluster is up."""
    if shutil.which("sinfo") is None:
        return "no sinfo: install and start the cluster with `bash slurm/local_cluster.sh start --install`"
    res = subprocess.run(
        ["sinfo", "-h", "-p", "debug", "-t", "idle,mix", "-o", "%D"], capture_output=True, text=True
    )
    if res.returncode != 0 or sum(int(x) for x in res.stdout.split()) < 2:
        why = res.stderr.strip() or "fewer than 2 idle nodes in partition debug"
        return f"local SLURM cluster not up ({why}): start it with `bash slurm/local_cluster.sh start`"
    return None


needs_cluster = pytest.mark.skipif(_cluster_reason() is not None, reason=str(_cluster_reason()))


def _weights(out_dir: Path, epoch: int | None = None) -> dict[str, torch.Tensor]:
    if (out_dir / "checkpoints" / "last.dcp").exists():  # TRAIN.STRATEGY fsdp: convert to one file
        out = out_dir / "converted.pyth"
        cmd = [sys.executable, str(REPO / "tools/convert_checkpoint.py"), "--src"]
        cmd += [str(out_dir / "checkpoints/last.dcp"), "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        return torch.load(out, map_location="cpu", weights_only=True)["model"]
    name = "last.pyth" if epoch is None else f"checkpoint_epoch_{epoch:05d}.pyth"
    return torch.load(out_dir / "checkpoints" / name, map_location="cpu", weights_only=True)["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _submit(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(REPO / "tools/submit.py"),
        "--cfg",
        str(REPO / "configs/synth/vit_t.yaml"),
        *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert res.returncode == 0, f"submit failed:\n{res.stdout}\n{res.stderr}"
    return res


def _job_id(stdout: str) -> str:
    return re.search(r"Submitted job (\d+)", stdout).group(1)


def _log_tail(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("*_log.*")))


def _task_pids(folder: Path) -> list[int]:
    """PIDs of a job's Python tasks, found by the submitit folder in their command line (not srun's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or it ended
            continue
        if argv[1:4] == [b"-u", b"-m", b"submitit.core._submit"] and argv[4].startswith(bytes(folder)):
            pids.append(int(proc.name))
    return pids


def _pending(pid: int, sig: int) -> bool:
    """Whether the signal waits for delivery to the process (SigPnd/ShdPnd in /proc/PID/status)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    masks = [int(x.split()[1], 16) for x in lines if x.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask >> (sig - 1) & 1 for mask in masks)


def _stopped(pid: int) -> bool:
    """Whether the process is stopped by a signal (state T in /proc/PID/stat)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth_data") / "synth"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth_dir) -> Path:
    """One process, global batch 8: the run every distributed result must reproduce."""
    out = tmp_path_factory.mktemp("single")
    cmd = [sys.executable, str(REPO / "tools/run_net.py"), "--cfg", str(REPO / "configs/synth/vit_t.yaml")]
    cmd += TINY + ["DATA.PATH_TO_DATA_DIR", str(synth_dir), "OUTPUT_DIR", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    # The weights moved: equality below is not equality of untrained models.
    assert _max_diff(_weights(out, 1), _weights(out)) > 1e-3
    return out


def _assert_same_training(out: Path, reference: Path) -> None:
    # DDP averages gradients over ranks instead of summing over one batch: equal up to float rounding.
    # Adam turns rounding noise in near-zero gradients into steps of up to ~lr (1e-3 here), so the bound
    # is the learning rate; a wrong data split or a missed gradient all-reduce moves weights far more.
    assert _max_diff(_weights(out), _weights(reference)) < 1e-3
    lines = [json.loads(x) for x in (out / "json_stats.log").read_text().splitlines()]
    assert [x["world_size"] for x in lines if x["_type"] == "run_info"][0] == 2


@needs_cluster
@pytest.mark.slurm
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_nodes_ddp_equals_single_process(tmp_path, synth_dir, reference, strategy):
    out = tmp_path / strategy
    res = _submit(
        ["--nodes", "2", "--ngpus", "0", "--partition", "debug", "--timeout", "15", "--wait"]
        + TINY
        + ["DATA.PATH_TO_DATA_DIR", str(synth_dir), "OUTPUT_DIR", str(out), "TRAIN.STRATEGY", strategy],
        timeout=600,
    )
    job_id = _job_id(res.stdout)
    assert f"logs:    {out / 'submitit' / job_id}" in res.stdout
    # One task on each simulated node; both ran from the code snapshot, not from the checkout.
    assert "rank 0/2 finished on n1" in res.stdout and "rank 1/2 finished on n2" in res.stdout
    results = [
        pickle.loads((out / "submitit" / job_id / f"{job_id}_{t}_result.pkl").read_bytes()) for t in (0, 1)
    ]
    for status, task in results:
        assert status == "success"
        assert Path(task["code_dir"]).parent == out / "submitit" / "code"
        assert task["master"].startswith("n1:")
    _assert_same_training(out, reference)
    assert (out / "config.yaml").read_text().count("NUM_SHARDS: 2") == 1


@needs_cluster
@pytest.mark.slurm
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_preempted_job_requeues_and_resumes(tmp_path, synth_dir, reference, strategy):
    out = tmp_path / "requeue"
    ext = "dcp" if strategy == "fsdp" else "pyth"  # fsdp: sharded checkpoint folders
    # timeout >= 11 min: submitit then treats the signal as a preemption, not as a time-out.
    res = _submit(
        ["--nodes", "2", "--ngpus", "0", "--partition", "debug", "--timeout", "15"]
        + TINY
        + ["DATA.PATH_TO_DATA_DIR", str(synth_dir), "OUTPUT_DIR", str(out), "TRAIN.STRATEGY", strategy],
        timeout=300,
    )
    job_id = _job_id(res.stdout)
    logs = out / "submitit" / job_id
    results = [logs / f"{job_id}_{t}_result.pkl" for t in (0, 1)]
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / f"checkpoint_epoch_00001.{ext}").exists():
            assert time.monotonic() < deadline, "no epoch-1 checkpoint in time\n" + _log_tail(logs)
            time.sleep(0.02)
        # Epochs take 0.3-0.9 s here: hold the tasks (SIGSTOP) so the preemption signal lands before the
        # last epoch, however slow SLURM is to deliver it.
        pids = _task_pids(out / "submitit")
        assert len(pids) == 2, pids
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while not all(_stopped(pid) for pid in pids):
                assert time.monotonic() < deadline, "the tasks did not stop\n" + _log_tail(logs)
                time.sleep(0.01)
            assert not (out / "checkpoints" / f"checkpoint_epoch_{EPOCHS:05d}.{ext}").exists(), (
                "finished before the tasks were held"
            )
            # What SLURM sends every task on preemption. The held tasks keep it pending and handle it
            # first when continued.
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
            deadline = time.monotonic() + 60
            while not all(_pending(pid, signal.SIGUSR2) for pid in pids):
                assert time.monotonic() < deadline, "SLURM did not deliver USR2\n" + _log_tail(logs)
                time.sleep(0.05)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 300
        while not all(p.exists() for p in results):
            assert time.monotonic() < deadline, "requeued job did not finish\n" + _log_tail(logs)
            time.sleep(1)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
    for p in results:
        status, _ = pickle.loads(p.read_bytes())
        assert status == "success", _log_tail(logs)
    log = (out / "stdout.log").read_text()
    resumed = re.findall(r"Resumed from .*(?:last\.pyth|\.dcp) \(completed epochs: (\d+)\)", log)
    assert len(resumed) == 1 and 1 <= int(resumed[0]) < EPOCHS, log[-3000:]
    assert "Calling checkpoint method" in _log_tail(logs)
    stats = [json.loads(x) for x in (out / "json_stats.log").read_text().splitlines()]
    assert len([x for x in stats if x["_type"] == "run_info"]) == 2  # two starts of the job
    assert sorted({x["epoch"] for x in stats if x["_type"] == "train_epoch"}) == list(range(1, EPOCHS + 1))
    _assert_same_training(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_local_executor_two_cpu_tasks(tmp_path, synth_dir, reference, strategy):
    out = tmp_path / "local"
    res = _submit(
        ["--local", "--nodes", "1", "--ngpus", "0", "--ntasks-per-node", "2", "--timeout", "15"]
        + TINY
        + ["DATA.PATH_TO_DATA_DIR", str(synth_dir), "OUTPUT_DIR", str(out), "TRAIN.STRATEGY", strategy],
        timeout=600,
    )
    assert "rank 0/2 finished" in res.stdout and "rank 1/2 finished" in res.stdout
    _assert_same_training(out, reference)
