#!/bin/bash
# Submits slurm-array.sbatch, then a job that runs after every task succeeded
# and checks the folder (exit 3 names a missing or damaged shard) and the
# round-trip error against thresholds (exit 1 when one is broken).
#
#   IN=/shared/models/Llama-3.1-70B OUT=/shared/models/Llama-3.1-70B-nf4 ./slurm-submit.sh
set -euo pipefail
: "${IN:?set IN}" "${OUT:?set OUT}"
here=$(dirname "$0")
array=$(sbatch --parsable --export=ALL "$here/slurm-array.sbatch")
sbatch --dependency="afterok:$array" --job-name=qconv-nf4-check --cpus-per-task=8 --mem=2G \
    --wrap="qconv verify '$OUT' && qconv verify '$IN' '$OUT' --max-rel-rmse 0.15 --min-overall-sqnr 18 --quiet"
