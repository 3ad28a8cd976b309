#!/usr/bin/env bash
# Plain sbatch, no submitit: srun starts one task per GPU (or one CPU task per node); each task reads its
# rank from SLURM and calls tools/run_net.py. Submit from the repository root:
#
#   sbatch --nodes 4 --ntasks-per-node 8 --gpus-per-node 8 --partition P slurm/sbatch_srun.sh \
#       configs/k400/stvit_b.yaml [KEY VALUE ...]
#
# --ntasks-per-node must equal --gpus-per-node (one task per GPU); on CPU use --ntasks-per-node 1.
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
CFG=${1:?usage: sbatch [options] slurm/sbatch_srun.sh CONFIG.yaml [KEY VALUE ...]}
shift
PYTHON=${PYTHON:-python}
GPUS=${SLURM_GPUS_ON_NODE:-0}
if [[ $GPUS -gt 0 && $GPUS -ne ${SLURM_NTASKS_PER_NODE:-1} ]]; then
  echo "one task per GPU: --ntasks-per-node (${SLURM_NTASKS_PER_NODE:-1}) must equal the GPUs per node ($GPUS)" >&2
  exit 2
fi
# Rendezvous: the first node of the allocation, a port derived from the job id (same after a requeue).
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 40000))
export MASTER_ADDR MASTER_PORT

requeue() {
  echo "$(date) signal received: requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR1

# RANK/LOCAL_RANK/WORLD_SIZE are per task, so they are expanded inside srun's shell (single quotes).
srun --kill-on-bad-exit=1 bash -c \
  'RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS exec "$0" "$@"' \
  "$PYTHON" tools/run_net.py --cfg "$CFG" NUM_SHARDS "$SLURM_JOB_NUM_NODES" NUM_GPUS "$GPUS" "$@" &
# bash runs a trap only between commands: waiting on a background srun lets USR1 interrupt the wait.
wait $!
