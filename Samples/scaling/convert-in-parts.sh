#!/bin/sh
# Runs one qconv command as N parts at once on this machine (xargs -P), then
# checks the folder they wrote together. The same command line a Slurm array,
# a Kubernetes Indexed Job or a CI matrix runs, one part per process.
#
#   Samples/scaling/convert-in-parts.sh N OUT qconv ARGUMENTS...
#
# ARGUMENTS is the command as one run would take it, OUT included; each part
# gets --part K/N added. Example (from the repository's root):
#
#   Samples/scaling/convert-in-parts.sh 3 /tmp/llama-nf4 \
#       .build/release/qconv to-nf4 Samples/sharded_llama /tmp/llama-nf4 --format hf --max-shard-size 60kB
#
# Each part uses all cores by default; pass --threads to share them out.
# Exit status: 0 when every part succeeded and the folder verifies, else non-zero.
set -eu
if [ "$#" -lt 4 ]; then
    echo "usage: $0 N OUT QCONV ARGUMENTS..." >&2
    exit 2
fi
n=$1
out=$2
shift 2
qconv=$1

# One process per part, all at once; xargs fails if any part fails.
seq 1 "$n" | xargs -P "$n" -I @PART@ "$@" --part "@PART@/$n" --quiet

# The gate: every shard the index names is there and whole.
"$qconv" verify "$out"
