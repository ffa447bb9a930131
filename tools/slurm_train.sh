#!/usr/bin/env bash
# Train K-Net under SLURM: one task per GPU, on one node or several; requeued after preemption.
#
#   sbatch tools/slurm_train.sh --config-file configs/panoptic/knet_r101.yaml
#   sbatch --nodes 4 tools/slurm_train.sh --config-file <cfg> [KEY VALUE ...]
#
# Every task runs train_net.py; it reads its rank from SLURM_PROCID / SLURM_LOCALID /
# SLURM_STEP_NUM_TASKS and joins one process group at MASTER_ADDR:MASTER_PORT (set below).
# 120 s before the time limit SLURM sends SIGUSR1 (--signal); a preemption sends SIGTERM. Training
# then finishes the current iteration, saves one checkpoint and exits with code 75; this script
# requeues the job, and the requeued job continues with --resume.
#
#SBATCH --job-name=knet
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -uo pipefail

PREEMPTED=75   # knet_d2.engine.preemption.PREEMPTED_EXIT_CODE
cd "${SLURM_SUBMIT_DIR:-.}"

# Rendezvous: the first node of the allocation, a port derived from the job id.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
export MASTER_ADDR MASTER_PORT
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# --resume continues from OUTPUT_DIR/last_checkpoint when there is one (a requeued job) and
# starts from iteration 0 otherwise. --kill-on-bad-exit: one failed task ends the others
# instead of leaving them waiting for it.
srun --kill-on-bad-exit=1 python train_net.py --resume "$@"
rc=$?

if [ "$rc" -eq "$PREEMPTED" ]; then
    echo "training was preempted and saved a checkpoint: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
