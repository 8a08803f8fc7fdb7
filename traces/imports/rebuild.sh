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
# H200 and B200: the measurements the PyPI wheel aiconfigurator-core 0.12.0 ships (vLLM and NCCL tables)
AIC=$(mktemp -d)
"$PYTHON" -m pip download -q --no-deps aiconfigurator-core==0.12.0 -d "$AIC"
(cd "$AIC" && unzip -q aiconfigurator_core-*.whl 'aiconfigurator_core/systems/data/*')
AIC_DATA=$AIC/aiconfigurator_core/systems/data
"$PYTHON" -m revati db import aiconfigurator \
    "$AIC_DATA"/{h200_sxm,b200_sxm}/{gemm/vllm,attention/vllm,comm/nccl,comm/vllm} --gpu h200 --gpu b200 \
    --note "PyPI aiconfigurator-core 0.12.0 (ai-dynamo/aiconfigurator)" --to aiconfigurator-core -q
cp aiconfigurator/LICENSE aiconfigurator-core/LICENSE
rm -rf "$AIC"
du -sh vidur vidur-attention aiconfigurator aiconfigurator-core
