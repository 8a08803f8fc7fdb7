#!/usr/bin/env bash
# Rebuild the imported measurements shipped in this folder from the public sources.
#   traces/imports/rebuild.sh [DATA]      DATA defaults to /work/shared/data (see README.md)
# Each import replaces its folder as a whole (README.md and other non-table files are kept).
set -euo pipefail
DATA=${1:-/work/shared/data}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")"
"$PYTHON" -m revati db import vidur "$DATA/vidur/compute" "$DATA/vidur/network" \
    --software "sarathi-serve (vidur@7d475133)" --note "microsoft/vidur@7d475133" --to vidur -q
"$PYTHON" -m revati db import vidur "$DATA/vidur/attention" \
    --software "sarathi-serve (vidur@acb95f6c)" --note "microsoft/vidur@acb95f6c" --to vidur-attention -q
"$PYTHON" -m revati db import aiconfigurator "$DATA/aiconfigurator" --gpu h100 --gpu a100 \
    --note "ai-dynamo/aiconfigurator@095f58a5" --to aiconfigurator -q
du -sh vidur vidur-attention aiconfigurator
