"""Launch stvideo training on SLURM (or locally) through submitit, one task per GPU.

``tools/submit.py`` is the command line. The pieces here: the launch settings from CLI flags and the
``LAUNCH`` config section (:func:`resolve_launch`), checks that fail before anything is submitted
(partition, nodes, GPUs, CPUs and memory from ``sinfo``; dataset and checkpoint paths), a snapshot of
the code the job imports, and :class:`TrainingJob`, the submitit callable: every task exports the
torch.distributed environment from SLURM's variables and calls ``stvideo.engine.run.run(cfg)``. On
SLURM's time-limit or preemption signal, ``TrainingJob.checkpoint`` requeues a fresh instance that
resumes from ``OUTPUT_DIR/checkpoints/last.pyth`` (TRAIN.AUTO_RESUME).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from fvcore.common.config import CfgNode

from stvideo.config import load_config
from stvideo.config.load import build_arg_parser, check_config, parse_with_overrides

# Trees a job needs; copied into the snapshot so edits to the checkout do not reach running jobs.
SNAPSHOT_TREES = ("stvideo", "tools", "configs")
# sinfo %t node states (suffix flags stripped) that cannot run a new job.
UNUSABLE_STATES = (
    "down",
    "drain",
    "drng",
    "fail",
    "failg",
    "maint",
    "inval",
    "boot",
    "futr",
    "npc",
    "pow_dn",
)


class LaunchError(ValueError):
    """A launch setting that cannot work on this cluster; raised before anything is submitted."""


@dataclass(frozen=True)
class LaunchSpec:
    """Everything submitit needs besides the config: resources, limits and folders."""

    nodes: int
    gpus_per_node: int
    tasks_per_node: int
    cpus_per_task: int
    mem_gb: int
    timeout_min: int
    partition: str
    constraint: str
    account: str
    qos: str
    signal_delay_s: int
    max_num_timeout: int
    job_dir: str
    name: str
    local: bool

    @property
    def num_tasks(self) -> int:
        return self.nodes * self.tasks_per_node


@dataclass(frozen=True)
class NodeInfo:
    """One node of a partition as ``sinfo -N`` reports it."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int
    available: bool


# ---------------------------------------------------------------------------------------- CLI


def build_submit_parser() -> argparse.ArgumentParser:
    """``--cfg FILE [KEY VALUE ...]`` plus the launch flags; unset flags fall back to the LAUNCH keys."""
    p = build_arg_parser("Submit an stvideo training job to SLURM through submitit (one task per GPU).")
    p.add_argument("--nodes", type=int, default=None, help="machines (default: NUM_SHARDS)")
    p.add_argument("--ngpus", type=int, default=None, help="GPUs per machine, 0 = CPU (default: NUM_GPUS)")
    p.add_argument(
        "--ntasks-per-node", type=int, default=None, help="CPU jobs only: processes per machine (default 1)"
    )
    p.add_argument("--partition", default=None, help="SLURM partition (default: LAUNCH.PARTITION)")
    p.add_argument("--timeout", type=int, default=None, help="time limit, minutes (LAUNCH.TIMEOUT_MIN)")
    p.add_argument("--mem", type=int, default=None, help="memory per node, GB (LAUNCH.MEM_GB)")
    p.add_argument("--cpus-per-task", type=int, default=None, help="cores per task (LAUNCH.CPUS_PER_TASK)")
    p.add_argument("--constraint", default=None, help="node features (LAUNCH.CONSTRAINT)")
    p.add_argument("--account", default=None, help="account to charge (LAUNCH.ACCOUNT)")
    p.add_argument("--qos", default=None, help="quality of service (LAUNCH.QOS)")
    p.add_argument(
        "--job-dir", default=None, help="submitit folder (LAUNCH.JOB_DIR; default OUTPUT_DIR/submitit)"
    )
    p.add_argument("--name", default=None, help="job name (default: stvideo-<config file name>)")
    p.add_argument(
        "--local", action="store_true", help="run through submitit's local executor on this machine"
    )
    p.add_argument("--wait", action="store_true", help="wait for the job and print each task's result")
    return p


def parse_submit_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the submit command line; ``args.opts`` holds all config overrides in order."""
    return parse_with_overrides(build_submit_parser(), argv)


def _pick(flag: Any, key: Any) -> Any:
    return key if flag is None else flag


def resolve_launch(cfg: CfgNode, args: argparse.Namespace) -> tuple[CfgNode, LaunchSpec]:
    """Merge CLI flags over the LAUNCH keys; return the job's config (flags written back) and the spec.

    The job's config records what was launched (NUM_SHARDS, NUM_GPUS, LAUNCH.*), with OUTPUT_DIR
    made absolute so every node and every requeue writes to the same place.
    """
    L = cfg.LAUNCH
    nodes = _pick(args.nodes, cfg.NUM_SHARDS)
    ngpus = _pick(args.ngpus, cfg.NUM_GPUS)
    if nodes < 1:
        raise LaunchError(f"--nodes must be >= 1, got {nodes}")
    if ngpus < 0:
        raise LaunchError(f"--ngpus must be >= 0, got {ngpus}")
    if ngpus > 0:
        if args.ntasks_per_node not in (None, ngpus):
            raise LaunchError(
                f"one task per GPU: --ntasks-per-node ({args.ntasks_per_node}) must equal --ngpus ({ngpus}) "
                "or be left out"
            )
        tasks = ngpus
    else:
        tasks = _pick(args.ntasks_per_node, 1)
        if tasks < 1:
            raise LaunchError(f"--ntasks-per-node must be >= 1, got {tasks}")
    cpus = _pick(args.cpus_per_task, L.CPUS_PER_TASK) or cfg.DATA_LOADER.NUM_WORKERS + 1
    out = cfg.clone()
    out.defrost()
    out.OUTPUT_DIR = os.path.abspath(cfg.OUTPUT_DIR)
    out.NUM_SHARDS, out.NUM_GPUS, out.SHARD_ID = nodes, ngpus, 0
    out.LAUNCH.PARTITION = _pick(args.partition, L.PARTITION)
    out.LAUNCH.TIMEOUT_MIN = _pick(args.timeout, L.TIMEOUT_MIN)
    out.LAUNCH.MEM_GB = _pick(args.mem, L.MEM_GB)
    out.LAUNCH.CPUS_PER_TASK = cpus
    out.LAUNCH.CONSTRAINT = _pick(args.constraint, L.CONSTRAINT)
    out.LAUNCH.ACCOUNT = _pick(args.account, L.ACCOUNT)
    out.LAUNCH.QOS = _pick(args.qos, L.QOS)
    out.LAUNCH.JOB_DIR = os.path.abspath(
        _pick(args.job_dir, L.JOB_DIR) or os.path.join(out.OUTPUT_DIR, "submitit")
    )
    if out.LAUNCH.TIMEOUT_MIN < 1:
        raise LaunchError(f"--timeout must be >= 1 minute, got {out.LAUNCH.TIMEOUT_MIN}")
    if out.LAUNCH.MEM_GB < 0 or cpus < 1:
        raise LaunchError(f"--mem must be >= 0 and --cpus-per-task >= 1 (got {out.LAUNCH.MEM_GB}, {cpus})")
    if out.TRAIN.BATCH_SIZE % (nodes * tasks):
        raise LaunchError(
            f"TRAIN.BATCH_SIZE ({out.TRAIN.BATCH_SIZE}) is the global batch and must be divisible by the "
            f"number of tasks ({nodes} nodes x {tasks} tasks = {nodes * tasks})"
        )
    check_config(out)
    out.freeze()
    cfg_name = Path(args.cfg_file).stem if args.cfg_file else "defaults"
    spec = LaunchSpec(
        nodes=nodes,
        gpus_per_node=ngpus,
        tasks_per_node=tasks,
        cpus_per_task=cpus,
        mem_gb=out.LAUNCH.MEM_GB,
        timeout_min=out.LAUNCH.TIMEOUT_MIN,
        partition=out.LAUNCH.PARTITION,
        constraint=out.LAUNCH.CONSTRAINT,
        account=out.LAUNCH.ACCOUNT,
        qos=out.LAUNCH.QOS,
        signal_delay_s=out.LAUNCH.SIGNAL_DELAY_S,
        max_num_timeout=out.LAUNCH.MAX_NUM_TIMEOUT,
        job_dir=out.LAUNCH.JOB_DIR,
        name=args.name or f"stvideo-{cfg_name}",
        local=bool(args.local),
    )
    return out, spec


def executor_parameters(spec: LaunchSpec, setup: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments for ``submitit.AutoExecutor.update_parameters`` (generic + prefixed keys)."""
    params: dict[str, Any] = {
        "name": spec.name,
        "nodes": spec.nodes,
        "tasks_per_node": spec.tasks_per_node,
        "cpus_per_task": spec.cpus_per_task,
        "timeout_min": spec.timeout_min,
    }
    if spec.gpus_per_node:
        params["gpus_per_node"] = spec.gpus_per_node
    if spec.mem_gb:
        params["mem_gb"] = spec.mem_gb
    if spec.local:  # submitit's local executor takes no other parameter through AutoExecutor
        if setup:
            params["local_setup"] = list(setup)
        return params
    params["slurm_signal_delay_s"] = spec.signal_delay_s
    for key in ("partition", "constraint", "account", "qos"):
        if getattr(spec, key):
            params[f"slurm_{key}"] = getattr(spec, key)
    if setup:
        params["slurm_setup"] = list(setup)
    return params


# --------------------------------------------------------------------------------- validation


def _gres_gpus(gres: str) -> int:
    """GPUs in an ``sinfo %G`` string such as ``gpu:8``, ``gpu:a100:4(S:0-1),gpu:v100:2`` or ``(null)``."""
    total = 0
    for entry in re.sub(r"\([^)]*\)", "", gres).split(","):
        fields = entry.strip().split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def parse_sinfo(text: str) -> dict[str, list[NodeInfo]]:
    """Partitions -> nodes from ``sinfo -h -N -o '%R|%N|%c|%m|%G|%t'`` output."""
    parts: dict[str, list[NodeInfo]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 6:
            raise LaunchError(f"unexpected sinfo line {line!r}")
        part, node, cpus, mem, gres, state = fields
        down = state.rstrip("*~#!%$@^-").lower() in UNUSABLE_STATES
        info = NodeInfo(node, int(cpus.rstrip("+")), int(mem.rstrip("+")), _gres_gpus(gres), not down)
        parts.setdefault(part, []).append(info)
    return parts


def query_partitions() -> tuple[dict[str, list[NodeInfo]], str]:
    """This cluster's partitions (via ``sinfo``) and the name of the default partition."""
    if shutil.which("sinfo") is None:
        raise LaunchError(
            "sinfo not found: this machine is not a SLURM login node. Submit from one, or pass --local "
            "to run the job here through submitit's local executor"
        )
    try:
        nodes = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%R|%N|%c|%m|%G|%t"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        summary = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True, timeout=60
        )
    except subprocess.CalledProcessError as e:
        raise LaunchError(f"sinfo failed ({e.returncode}): {e.stderr.strip()}") from e
    defaults = [p[:-1] for p in summary.stdout.split() if p.endswith("*")]
    return parse_sinfo(nodes), (defaults[0] if defaults else "")


def check_cluster(spec: LaunchSpec, partitions: dict[str, list[NodeInfo]], default_partition: str) -> None:
    """Fail unless the partition exists and has ``spec.nodes`` usable nodes with enough GPUs/CPUs/memory."""
    name = spec.partition or default_partition
    if not name:
        raise LaunchError(
            f"no --partition given and the cluster has no default; choose one of {sorted(partitions)}"
        )
    if name not in partitions:
        raise LaunchError(f"unknown partition {name!r}; this cluster has {sorted(partitions)}")
    nodes = [n for n in partitions[name] if n.available]
    if not nodes:
        raise LaunchError(f"partition {name!r} has no usable nodes (all down or drained)")
    max_gpus = max(n.gpus for n in nodes)
    if spec.gpus_per_node > max_gpus:
        raise LaunchError(
            f"--ngpus {spec.gpus_per_node} (one task per GPU) but nodes of partition {name!r} have at most "
            f"{max_gpus} GPUs"
        )
    cpus = spec.tasks_per_node * spec.cpus_per_task
    fit = [
        n for n in nodes if n.gpus >= spec.gpus_per_node and n.cpus >= cpus and n.mem_mb >= spec.mem_gb * 1024
    ]
    if len(fit) < spec.nodes:
        raise LaunchError(
            f"--nodes {spec.nodes} needs {spec.nodes} nodes of partition {name!r} with >= "
            f"{spec.gpus_per_node} GPUs, >= {cpus} CPUs ({spec.tasks_per_node} tasks x "
            f"{spec.cpus_per_task}) and >= {spec.mem_gb} GB; it has {len(fit)} such nodes of "
            f"{len(partitions[name])}"
        )


def check_local(spec: LaunchSpec, num_cuda_devices: int) -> None:
    """``--local`` runs on this one machine: one node, no more GPUs than it has."""
    if spec.nodes != 1:
        raise LaunchError(f"--local runs on this machine only: use --nodes 1 (got {spec.nodes})")
    if spec.gpus_per_node > num_cuda_devices:
        raise LaunchError(
            f"--ngpus {spec.gpus_per_node} but this machine has {num_cuda_devices} CUDA devices"
        )


def check_paths(cfg: CfgNode) -> None:
    """Dataset, prefix and checkpoint paths must exist before a job waits in the queue for them."""
    datasets = [
        d for on, d in ((cfg.TRAIN.ENABLE, cfg.TRAIN.DATASET), (cfg.TEST.ENABLE, cfg.TEST.DATASET)) if on
    ]
    generated = all(d == "synth" for d in datasets) and cfg.DATA.SYNTH_GENERATE
    if datasets and not generated:
        if not cfg.DATA.PATH_TO_DATA_DIR:
            raise LaunchError(
                "DATA.PATH_TO_DATA_DIR is empty: set it to the folder with the annotation files"
            )
        if not os.path.isdir(cfg.DATA.PATH_TO_DATA_DIR):
            raise LaunchError(f"DATA.PATH_TO_DATA_DIR {cfg.DATA.PATH_TO_DATA_DIR!r} is not a directory")
    if datasets and cfg.DATA.PATH_PREFIX and not os.path.isdir(cfg.DATA.PATH_PREFIX):
        raise LaunchError(f"DATA.PATH_PREFIX {cfg.DATA.PATH_PREFIX!r} is not a directory")
    for key, path in (
        ("MODEL.PRETRAINED", cfg.MODEL.PRETRAINED),
        ("TRAIN.CHECKPOINT_FILE_PATH", cfg.TRAIN.CHECKPOINT_FILE_PATH),
        ("TEST.CHECKPOINT_FILE_PATH", cfg.TEST.CHECKPOINT_FILE_PATH),
    ):
        if path and not os.path.isfile(path):
            raise LaunchError(f"{key} {path!r} does not exist")


# ------------------------------------------------------------------------------ code snapshot


def snapshot_code(src_root: Path, dest: Path) -> Path:
    """Copy the stvideo/, tools/ and configs/ trees of ``src_root`` into ``dest``; return ``dest``.

    In a git checkout the copied files are the tracked and untracked-but-not-ignored ones (what
    ``git ls-files -co --exclude-standard`` lists), so build outputs and caches stay behind.
    """
    trees = [t for t in SNAPSHOT_TREES if (src_root / t).is_dir()]
    if "stvideo" not in trees:
        raise LaunchError(f"no stvideo package under {src_root} to snapshot")
    files: list[str] | None = None
    if (src_root / ".git").exists() and shutil.which("git"):
        res = subprocess.run(
            ["git", "-C", str(src_root), "ls-files", "-co", "--exclude-standard", "-z", "--", *trees],
            capture_output=True,
            text=True,
        )
        if res.returncode == 0:
            files = [f for f in res.stdout.split("\0") if f and (src_root / f).is_file()]
    if files is None:
        files = [
            str(p.relative_to(src_root))
            for t in trees
            for p in sorted((src_root / t).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_root / rel, target)
    return dest


def code_root() -> Path:
    """The checkout whose ``stvideo`` package this process imported."""
    import stvideo

    return Path(stvideo.__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------- the job


def export_distributed_env() -> tuple[submitit.helpers.TorchDistributedEnvironment, submitit.JobEnvironment]:
    """Set MASTER_ADDR (first node), MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK from the job's environment.

    Every GPU of the node stays visible to every task (``init_distributed`` picks ``cuda:LOCAL_RANK``).
    """
    # overwrite: variables inherited from the submitting shell (e.g. an interactive allocation) must not
    # win over the job's own; a MASTER_PORT set there is still used as the port.
    dist_env = submitit.helpers.TorchDistributedEnvironment().export(
        set_cuda_visible_devices=False, overwrite=True
    )
    return dist_env, submitit.JobEnvironment()


def job_config(cfg: CfgNode, num_nodes: int, node: int) -> CfgNode:
    """The config one task runs: NUM_SHARDS/SHARD_ID from the job, resume always on (requeues)."""
    out = cfg.clone()
    out.defrost()
    out.NUM_SHARDS, out.SHARD_ID = num_nodes, node
    out.TRAIN.AUTO_RESUME = True
    out.freeze()
    return out


class TrainingJob:
    """The submitit callable: one instance runs in every task of the job.

    ``__call__`` exports MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK from SLURM's variables
    (``submitit.helpers.TorchDistributedEnvironment``) and runs ``stvideo.engine.run.run``. Rank 0's
    ``checkpoint`` (called by submitit on SLURM's USR2 signal) returns a fresh instance to requeue;
    it resumes from the last epoch checkpoint, which the trainer writes atomically every epoch.
    """

    def __init__(self, cfg: CfgNode, workdir: str | None = None, code_dir: str | None = None):
        self.cfg = cfg
        self.workdir = workdir or os.getcwd()  # relative paths in the config are relative to this
        self.code_dir = code_dir  # the code snapshot the job must import (None: no snapshot)

    def __call__(self) -> dict[str, Any]:
        # The job starts inside the snapshot (so ``python -m`` puts it first on sys.path, ahead of a
        # checkout in the submission directory); the run itself works in the submission directory.
        os.chdir(self.workdir)
        if self.code_dir and code_root() != Path(self.code_dir).resolve():
            raise RuntimeError(
                f"job imported stvideo from {code_root()}, not from its snapshot {self.code_dir}"
            )
        dist_env, job_env = export_distributed_env()
        cfg = job_config(self.cfg, job_env.num_nodes, job_env.node)
        from stvideo.engine.run import run  # heavy imports only inside the job

        result = run(cfg)
        return {
            "rank": dist_env.rank,
            "world_size": dist_env.world_size,
            "node": job_env.node,
            "node_name": os.environ.get("SLURMD_NODENAME") or job_env.hostname,
            "master": f"{dist_env.master_addr}:{dist_env.master_port}",
            "code_dir": str(code_root()),
            "result": result,
        }

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Requeue a fresh instance; AUTO_RESUME picks up OUTPUT_DIR/checkpoints/last.pyth."""
        return submitit.helpers.DelayedSubmission(type(self)(self.cfg, self.workdir, self.code_dir))


# ------------------------------------------------------------------------------------ submit


def prepare(args: argparse.Namespace) -> tuple[CfgNode, LaunchSpec]:
    """Load the config and launch settings and run every check that needs no submission."""
    cfg = load_config(args.cfg_file, args.opts)
    cfg, spec = resolve_launch(cfg, args)
    check_paths(cfg)
    if spec.local:
        import torch

        check_local(spec, torch.cuda.device_count())
    else:
        partitions, default = query_partitions()
        check_cluster(spec, partitions, default)
    return cfg, spec


def submit(cfg: CfgNode, spec: LaunchSpec) -> submitit.Job:
    """Snapshot the code (LAUNCH.SNAPSHOT_CODE), then submit a :class:`TrainingJob` with the resources."""
    job_dir = Path(spec.job_dir)
    setup: list[str] = []
    snap = None
    if cfg.LAUNCH.SNAPSHOT_CODE:
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        snap = snapshot_code(code_root(), job_dir / "code" / stamp)
        # Python puts the working directory first on sys.path, then PYTHONPATH, then the installed
        # (or editable) stvideo: starting in the snapshot makes it win over all of them.
        quoted = shlex.quote(str(snap))
        setup += [f"cd {quoted}", f"export PYTHONPATH={quoted}${{PYTHONPATH:+:$PYTHONPATH}}"]
    cluster = "local" if spec.local else "slurm"
    executor = submitit.AutoExecutor(
        folder=job_dir / "%j", cluster=cluster, **{f"{cluster}_max_num_timeout": spec.max_num_timeout}
    )
    executor.update_parameters(**executor_parameters(spec, setup))
    return executor.submit(TrainingJob(cfg, os.getcwd(), str(snap) if snap else None))


def describe(cfg: CfgNode, spec: LaunchSpec, job: submitit.Job) -> str:
    """What was submitted and where its logs, outputs and checkpoints go."""
    from stvideo.engine.optim import scaled_lr

    per_task = cfg.TRAIN.BATCH_SIZE // spec.num_tasks
    where = "local executor" if spec.local else f"partition {spec.partition or '(default)'}"
    return "\n".join(
        [
            f"Submitted job {job.job_id} ({spec.name}) on {where}: {spec.nodes} node(s) x "
            f"{spec.tasks_per_node} task(s), {spec.gpus_per_node} GPU(s) per node, "
            f"time limit {spec.timeout_min} min",
            f"  global batch {cfg.TRAIN.BATCH_SIZE} = {spec.num_tasks} tasks x {per_task}; "
            f"lr {scaled_lr(cfg, cfg.SOLVER.BASE_LR):.3g} (BASE_LR {cfg.SOLVER.BASE_LR:g}, "
            f"scaling {cfg.SOLVER.BASE_LR_SCALE})",
            f"  logs:    {Path(spec.job_dir) / str(job.job_id)}",
            f"  outputs: {cfg.OUTPUT_DIR} (checkpoints/last.pyth; a requeued job resumes from it)",
        ]
    )
