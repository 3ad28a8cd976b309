"""Fast tests of the submitit launcher that need no cluster: CLI -> launch settings -> executor
parameters, the checks that run before submission, SLURM/local environment -> ranks, code snapshots."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import submitit

from stvideo.config import load_config
from stvideo.launch.submitit import (
    LaunchError,
    LaunchSpec,
    TrainingJob,
    check_cluster,
    check_local,
    check_paths,
    executor_parameters,
    export_distributed_env,
    job_config,
    parse_sinfo,
    parse_submit_args,
    resolve_launch,
    snapshot_code,
)

REPO = Path(__file__).resolve().parents[1]


def _resolve(argv: list[str]) -> tuple:
    args = parse_submit_args(argv)
    return resolve_launch(load_config(args.cfg_file, args.opts), args)


def test_cli_flags_and_overrides_in_any_order():
    args = parse_submit_args(
        ["--cfg", "c.yaml", "TRAIN.BATCH_SIZE", "64", "--nodes", "4", "--ngpus", "8", "SOLVER.MAX_EPOCH", "3"]
        + ["--partition", "gpu", "--local", "--opts", "RNG_SEED", "5"]
    )
    assert (args.cfg_file, args.nodes, args.ngpus, args.partition, args.local) == (
        "c.yaml",
        4,
        8,
        "gpu",
        True,
    )
    assert args.opts == ["TRAIN.BATCH_SIZE", "64", "SOLVER.MAX_EPOCH", "3", "RNG_SEED", "5"]
    with pytest.raises(SystemExit):
        parse_submit_args(["--nodse", "2"])


def test_resolve_launch_flags_override_config(tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(
        "OUTPUT_DIR: rel_out\nDATA_LOADER:\n  NUM_WORKERS: 7\nTRAIN:\n  BATCH_SIZE: 256\n"
        "LAUNCH:\n  PARTITION: cfgpart\n  TIMEOUT_MIN: 60\n  ACCOUNT: proj\n"
    )
    cfg, spec = _resolve(["--cfg", str(cfg_file), "--nodes", "4", "--ngpus", "8", "--partition", "P"])
    assert spec == LaunchSpec(
        nodes=4,
        gpus_per_node=8,
        tasks_per_node=8,
        cpus_per_task=8,  # NUM_WORKERS + 1
        mem_gb=0,
        timeout_min=60,
        partition="P",
        constraint="",
        account="proj",
        qos="",
        signal_delay_s=120,
        max_num_timeout=30,
        job_dir=os.path.abspath("rel_out/submitit"),
        name="stvideo-exp",
        local=False,
    )
    assert spec.num_tasks == 32
    # The job's config records what was launched; OUTPUT_DIR is absolute for every node and requeue.
    assert (cfg.NUM_SHARDS, cfg.NUM_GPUS, cfg.OUTPUT_DIR) == (4, 8, os.path.abspath("rel_out"))
    assert (cfg.LAUNCH.PARTITION, cfg.LAUNCH.TIMEOUT_MIN, cfg.LAUNCH.CPUS_PER_TASK) == ("P", 60, 8)
    assert cfg.is_frozen()


def test_resolve_launch_cpu_tasks_and_bad_settings(tmp_path):
    _, spec = _resolve(["--nodes", "2", "--ngpus", "0", "--ntasks-per-node", "2", "TRAIN.BATCH_SIZE", "8"])
    assert (spec.tasks_per_node, spec.gpus_per_node, spec.num_tasks) == (2, 0, 4)
    with pytest.raises(
        LaunchError, match=r"one task per GPU: --ntasks-per-node \(4\) must equal --ngpus \(8\)"
    ):
        _resolve(["--ngpus", "8", "--ntasks-per-node", "4"])
    with pytest.raises(LaunchError, match=r"TRAIN.BATCH_SIZE \(64\) .*\(3 nodes x 8 tasks = 24\)"):
        _resolve(["--nodes", "3", "--ngpus", "8"])
    with pytest.raises(LaunchError, match="--nodes must be >= 1"):
        _resolve(["--nodes", "0"])
    with pytest.raises(LaunchError, match="--timeout must be >= 1"):
        _resolve(["--timeout", "0"])


def test_executor_parameters_slurm_and_local(tmp_path):
    _, spec = _resolve(
        ["--nodes", "4", "--ngpus", "8", "--partition", "P", "--mem", "400", "--constraint", "a100"]
        + ["--qos", "high", "--timeout", "90", "--job-dir", "/jobs"]
    )
    setup = ["export PYTHONPATH=/snap${PYTHONPATH:+:$PYTHONPATH}"]
    assert executor_parameters(spec, setup) == {
        "name": "stvideo-defaults",
        "nodes": 4,
        "tasks_per_node": 8,
        "cpus_per_task": 3,
        "timeout_min": 90,
        "gpus_per_node": 8,
        "mem_gb": 400,
        "slurm_signal_delay_s": 120,
        "slurm_partition": "P",
        "slurm_constraint": "a100",
        "slurm_qos": "high",
        "slurm_setup": setup,
    }
    _, local = _resolve(["--local", "--ngpus", "0", "--ntasks-per-node", "2", "TRAIN.BATCH_SIZE", "8"])
    assert executor_parameters(local) == {
        "name": "stvideo-defaults",
        "nodes": 1,
        "tasks_per_node": 2,
        "cpus_per_task": 3,
        "timeout_min": 4320,
    }
    # submitit accepts both sets (it rejects unknown or misprefixed parameters).
    submitit.AutoExecutor(folder=tmp_path / "l", cluster="local").update_parameters(
        **executor_parameters(local, ["cd /snap"])
    )


@pytest.mark.skipif(
    shutil.which("srun") is None, reason="submitit's SlurmExecutor needs the SLURM client (srun)"
)
def test_executor_parameters_make_the_expected_sbatch_script(tmp_path):
    _, spec = _resolve(
        ["--nodes", "4", "--ngpus", "8", "--partition", "P", "--mem", "400", "--account", "acc"]
        + ["--qos", "high", "--constraint", "a100"]
    )
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm", slurm_max_num_timeout=30)
    ex.update_parameters(**executor_parameters(spec, ["export PYTHONPATH=/snap"]))
    text = ex._executor._make_submission_file_text("python -m job", "uid")
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --mem=400GB",
        "#SBATCH --partition=P",
        "#SBATCH --account=acc",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --time=4320",
        "export PYTHONPATH=/snap",
    ):
        assert line in text.splitlines(), line


SINFO = """\
gpu|g01|64|512000|gpu:a100:8(S:0-1)|idle
gpu|g02|64|512000|gpu:a100:8(S:0-1)|mix
gpu|g03|64|512000|gpu:a100:4(S:0-1),gpu:v100:2|idle
gpu|g04|64|512000|gpu:8|drain*
cpu|c01|32|128000|(null)|idle
"""


def test_parse_sinfo_counts_gpus_and_usable_nodes():
    parts = parse_sinfo(SINFO)
    assert sorted(parts) == ["cpu", "gpu"]
    assert [(n.name, n.gpus, n.available) for n in parts["gpu"]] == [
        ("g01", 8, True),
        ("g02", 8, True),
        ("g03", 6, True),
        ("g04", 8, False),
    ]
    assert (parts["cpu"][0].cpus, parts["cpu"][0].mem_mb, parts["cpu"][0].gpus) == (32, 128000, 0)


def test_check_cluster_rejects_impossible_requests():
    parts = parse_sinfo(SINFO)

    base = _resolve([])[1]
    wanted = dict(nodes=2, gpus_per_node=8, tasks_per_node=8, cpus_per_task=8, mem_gb=400, partition="gpu")

    def spec(**kw) -> LaunchSpec:
        return dataclasses.replace(base, **{**wanted, **kw})

    check_cluster(spec(), parts, "cpu")  # g01 + g02 fit
    check_cluster(spec(partition="", nodes=1, gpus_per_node=0, tasks_per_node=1, mem_gb=100), parts, "cpu")
    with pytest.raises(LaunchError, match=r"unknown partition 'gpus'; this cluster has \['cpu', 'gpu'\]"):
        check_cluster(spec(partition="gpus"), parts, "cpu")
    with pytest.raises(LaunchError, match="--ngpus 16 .* at most 8 GPUs"):
        check_cluster(spec(gpus_per_node=16, tasks_per_node=16), parts, "cpu")
    with pytest.raises(LaunchError, match="--nodes 3 needs 3 nodes .* it has 2 such nodes of 4"):
        check_cluster(spec(nodes=3), parts, "cpu")  # g03 has 6 GPUs, g04 is drained
    with pytest.raises(LaunchError, match=">= 72 CPUs"):
        check_cluster(spec(nodes=1, cpus_per_task=9), parts, "cpu")
    with pytest.raises(LaunchError, match="no --partition given"):
        check_cluster(spec(partition=""), parts, "")
    with pytest.raises(LaunchError, match="--local runs on this machine only"):
        check_local(spec(nodes=2, local=True), 0)
    with pytest.raises(LaunchError, match="--ngpus 8 but this machine has 1 CUDA devices"):
        check_local(spec(nodes=1, local=True), 1)


def test_check_paths_names_the_missing_path(tmp_path):
    cfg = load_config(None, ["TRAIN.DATASET", "kinetics", "DATA.PATH_TO_DATA_DIR", str(tmp_path / "k400")])
    with pytest.raises(LaunchError, match=r"DATA.PATH_TO_DATA_DIR '.*k400' is not a directory"):
        check_paths(cfg)
    (tmp_path / "k400").mkdir()
    check_paths(cfg)
    with pytest.raises(LaunchError, match="DATA.PATH_TO_DATA_DIR is empty"):
        check_paths(load_config(None, ["DATA.PATH_TO_DATA_DIR", ""]))
    missing = str(tmp_path / "vit.pth")
    with pytest.raises(LaunchError, match=r"MODEL.PRETRAINED '.*vit.pth' does not exist"):
        check_paths(load_config(None, ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "MODEL.PRETRAINED", missing]))
    # The synthetic dataset is generated on first use: a missing folder is fine.
    check_paths(
        load_config(
            None,
            ["TRAIN.DATASET", "synth", "TEST.DATASET", "synth", "DATA.PATH_TO_DATA_DIR", str(tmp_path / "s")],
        )
    )


def test_submit_cli_fails_before_submitting(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("submit_cli", REPO / "tools/submit.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "out"
    argv = ["--nodes", "2", "OUTPUT_DIR", str(out), "DATA.PATH_TO_DATA_DIR", str(tmp_path / "nowhere")]
    assert cli.main(argv + ["TRAIN.BATCH_SIZE", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Not submitted: DATA.PATH_TO_DATA_DIR") and "nowhere" in err
    assert cli.main(argv + ["TRAIN.BATCH_SZE", "8"]) == 2
    assert "Unknown config key TRAIN.BATCH_SZE (did you mean TRAIN.BATCH_SIZE?)" in capsys.readouterr().err
    assert not out.exists()  # nothing written, no snapshot, no job folder


@pytest.fixture(autouse=True)
def _restore_environ():
    """export_distributed_env() writes RANK/WORLD_SIZE/... into os.environ; never let them leak into
    later tests (a leaked WORLD_SIZE makes every later run_net subprocess wait for absent ranks)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _env(monkeypatch, values: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))]:
        monkeypatch.delenv(key)
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_slurm_environment_gives_ranks(monkeypatch):
    _env(
        monkeypatch,
        {
            "SUBMITIT_EXECUTOR": "slurm",
            "SLURM_JOB_ID": "4242",
            "SLURM_NTASKS": "16",
            "SLURM_JOB_NUM_NODES": "2",
            "SLURM_NODEID": "1",
            "SLURM_PROCID": "9",
            "SLURM_LOCALID": "1",
            "SLURM_JOB_NODELIST": "gpu[07-08]",
            "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
        },
    )
    dist_env, job_env = export_distributed_env()
    got = {k: os.environ[k] for k in ("MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    assert got == {
        "MASTER_ADDR": "gpu07",
        "RANK": "9",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
    }
    assert os.environ["MASTER_PORT"] == str(dist_env.master_port) and 20000 <= dist_env.master_port <= 60000
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"  # cuda:LOCAL_RANK must stay valid
    cfg = job_config(load_config(None, ["TRAIN.AUTO_RESUME", "False"]), job_env.num_nodes, job_env.node)
    assert (cfg.NUM_SHARDS, cfg.SHARD_ID, cfg.TRAIN.AUTO_RESUME) == (2, 1, True)


def test_local_environment_gives_ranks(monkeypatch):
    _env(
        monkeypatch,
        {
            "SUBMITIT_EXECUTOR": "local",
            "SUBMITIT_LOCAL_JOB_ID": "777",
            "SUBMITIT_LOCAL_NTASKS": "2",
            "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
            "SUBMITIT_LOCAL_NODEID": "0",
            "SUBMITIT_LOCAL_GLOBALID": "1",
            "SUBMITIT_LOCAL_LOCALID": "1",
            "MASTER_PORT": "29555",
        },
    )
    dist_env, job_env = export_distributed_env()
    assert (dist_env.rank, dist_env.world_size, dist_env.local_rank, job_env.num_nodes) == (1, 2, 1, 1)
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == (job_env.hostnames[0], "29555")


def test_checkpoint_requeues_a_fresh_trainer():
    cfg = load_config(None, ["OUTPUT_DIR", "/x"])
    trainer = TrainingJob(cfg, "/submit/dir", "/jobs/code/1")
    delayed = trainer.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert type(delayed.function) is TrainingJob and delayed.function is not trainer
    fresh = delayed.function
    assert (fresh.cfg.dump(), fresh.workdir, fresh.code_dir) == (cfg.dump(), "/submit/dir", "/jobs/code/1")
    assert (delayed.args, delayed.kwargs) == ((), {})


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_snapshot_copies_tracked_and_new_files_only(tmp_path):
    src = tmp_path / "repo"
    for rel, text in {
        "stvideo/__init__.py": "V = 1\n",
        "stvideo/sub/mod.py": "X = 1\n",
        "tools/run.py": "print()\n",
        "configs/a.yaml": "A: 1\n",
        "notes/other.txt": "not copied\n",
        ".gitignore": "*.pyth\n__pycache__/\n",
    }.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    _git(src, "init", "-q")
    _git(src, "add", ".")
    (src / "stvideo/new.py").write_text("NEW = 1\n")  # untracked but not ignored: the user's new code
    (src / "configs/big.pyth").write_text("ignored\n")
    (src / "stvideo/__pycache__").mkdir()
    (src / "stvideo/__pycache__/x.pyc").write_text("ignored\n")
    snap = snapshot_code(src, tmp_path / "snap")
    files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    assert files == [
        "configs/a.yaml",
        "stvideo/__init__.py",
        "stvideo/new.py",
        "stvideo/sub/mod.py",
        "tools/run.py",
    ]
    (src / "stvideo/__init__.py").write_text("V = 2\n")  # editing the checkout after submitting
    assert (snap / "stvideo/__init__.py").read_text() == "V = 1\n"
    # Without git metadata the trees are copied, minus caches.
    shutil.rmtree(src / ".git")
    snap2 = snapshot_code(src, tmp_path / "s2")
    files = sorted(str(p.relative_to(snap2)) for p in snap2.rglob("*") if p.is_file())
    assert files == [
        "configs/a.yaml",
        "configs/big.pyth",
        "stvideo/__init__.py",
        "stvideo/new.py",
        "stvideo/sub/mod.py",
        "tools/run.py",
    ]
