#!/usr/bin/env bash
# Plain sbatch, no submitit: srun starts one torchrun per node and torchrun starts one process per GPU
# (c10d rendezvous on the first node). Submit from the repository root:
#
#   sbatch --nodes 4 --gpus-per-node 8 --partition P slurm/sbatch_torchrun.sh \
#       configs/k400/stvit_b.yaml [KEY VALUE ...]
#
# Without GPUs each node runs NPROC_PER_NODE CPU processes (default 1, gloo).
# On the time-limit / preemption signal the batch shell requeues the job; the requeued job resumes
# from OUTPUT_DIR/checkpoints/last.pyth (TRAIN.AUTO_RESUME, on by default).
#SBATCH --job-name=stvideo
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=72:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
CFG=${1:?usage: sbatch [options] slurm/sbatch_torchrun.sh CONFIG.yaml [KEY VALUE ...]}
shift
PYTHON=${PYTHON:-python}
GPUS=${SLURM_GPUS_ON_NODE:-0}
NPROC=$GPUS
[[ $NPROC -gt 0 ]] || NPROC=${NPROC_PER_NODE:-1}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 40000))

requeue() {
  echo "$(date) signal received: requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR1

srun --kill-on-bad-exit=1 --ntasks-per-node=1 "$PYTHON" -m torch.distributed.run \
  --nnodes "$SLURM_JOB_NUM_NODES" --nproc-per-node "$NPROC" \
  --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$SLURM_JOB_ID" \
  tools/run_net.py --cfg "$CFG" NUM_SHARDS "$SLURM_JOB_NUM_NODES" NUM_GPUS "$GPUS" "$@" &
# bash runs a trap only between commands: waiting on a background srun lets USR1 interrupt the wait.
wait $!
