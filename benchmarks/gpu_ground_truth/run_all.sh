#!/usr/bin/env bash
# The GPU ground-truth run in one command (about 6 minutes on one H100, 9 at most): what revati is compared
# against, recorded with the same software stack revati emulates.
#
#   benchmarks/gpu_ground_truth/run_all.sh DEST            # on a GPU box, from the repository root
#   benchmarks/gpu_ground_truth/run_all.sh DEST --tiny     # the CPU pipeline check (tests run it)
#   PHASES=main MAIN_REPEATS=5 benchmarks/gpu_ground_truth/run_all.sh DEST   # some phases only
#
# Writes into DEST one tarball per phase (each phase has its own time limit, so a slow or failed
# phase leaves the others' results), plus run_all.log:
#   gt-main.tar.gz   the main job's driver run natively (hf_cb --native): vllm-bench-serve metrics
#                    of the workload `revati emulate` runs (MAIN_REPEATS times), a busier rate and
#                    a GQA model (Llama-3-8B), plus the host CPU's calibration score
#   gt-micro.tar.gz  GEMM and attention grids of every shipped model at TP 1/2/4/8, traced
#   gt-hf.tar.gz     HF `generate` of a Llama-2-7B shape, traced, with end-to-end latency
# Afterwards, here: benchmarks/gpu_ground_truth/compare.py unpacks them and prints revati vs
# measured. revati need not be installed on the GPU box: use_checkout.sh puts this checkout on
# PYTHONPATH (no pip, no network).
set -u -o pipefail
DEST=${1:?usage: run_all.sh DEST [--tiny]}
TINY=${2:-}
PHASES=${PHASES:-main,micro,hf}      # which phases to run (comma list)
MAIN_REPEATS=${MAIN_REPEATS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/revati-gt.XXXXXX")
LOG="$DEST/run_all.log"
# offline: nothing is downloaded (transformers would otherwise look up Hub kernels for attention)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 REVATI_HOME=${REVATI_HOME:-$WORK/home}
source "$HERE/use_checkout.sh"

if [ "$TINY" = "--tiny" ]; then
    DEV=(--device cpu --tiny); MAIN=(--model tiny-llama --random-input-len 16 --random-output-len 4 --num-prompts 4)
    MAIN_BUSY=(--request-rate 16); MAIN_GQA=(--model tiny-llama --request-rate 2); HF=()
    LIMITS=(300 300 300 300)
else
    DEV=(); MAIN=(--num-prompts 16 --request-rate 4); MAIN_BUSY=(--num-prompts 64 --request-rate 16)
    MAIN_GQA=(--model llama-3-8b)
    HF=(--batch 1,8 --prompt-len 128,512 --new-tokens 16 --reps 2)
    LIMITS=(60 60 180 130)   # each main-job run, busy/gqa, microbench, hf-generate: 9 min at worst in all
fi

phase() {  # phase NAME SECONDS CMD...: run with a time limit, log it, never stop the script
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0))s" | tee -a "$LOG"
}

cd "$WORK"
{ date -u; "$PY" -c "import revati; print('revati from', revati.__file__)"; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv 2>&1
  "$PY" -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  lscpu | grep -E 'Model name|^CPU\(s\)'; } >>"$LOG" 2>&1
if [[ ,$PHASES, == *,main,* ]]; then
    mkdir -p main
    phase calibrate 30 bash -c "\"$PY\" -m revati.hostcpu 15 > main/host_score.json"
    for rep in $(seq 1 "$MAIN_REPEATS"); do   # the GPU's own run-to-run spread
        phase "main-job-$rep" "${LIMITS[0]}" "$PY" -m revati.drivers.hf_cb --native --quiet "${MAIN[@]}" \
            --result-dir "main/rate4-$rep"
    done
    phase main-busy "${LIMITS[1]}" "$PY" -m revati.drivers.hf_cb --native --quiet "${MAIN[@]}" "${MAIN_BUSY[@]}" \
        --result-dir main/busy
    phase main-gqa "${LIMITS[1]}" "$PY" -m revati.drivers.hf_cb --native --quiet "${MAIN[@]}" "${MAIN_GQA[@]}" \
        --result-dir main/gqa
    tar -czf "$DEST/gt-main.tar.gz" main
fi

if [[ ,$PHASES, == *,micro,* ]]; then
phase microbench "${LIMITS[2]}" "$PY" -m revati trace -q -o gt-micro --run-id gt-micro --warmup-steps 1 -- \
    "$PY" "$HERE/microbench.py" "${DEV[@]}" --grid zoo --ops gemm,attention --reps 3 --out gt-micro/events.jsonl
tar -czf "$DEST/gt-micro.tar.gz" gt-micro
fi

if [[ ,$PHASES, == *,hf,* ]]; then
phase hf-generate "${LIMITS[3]}" "$PY" -m revati trace -q -o gt-hf --run-id gt-hf --warmup-steps 1 -- \
    "$PY" "$HERE/hf_generate.py" "${DEV[@]}" "${HF[@]}" --out gt-hf/e2e.jsonl
tar -czf "$DEST/gt-hf.tar.gz" gt-hf
fi
echo "== done: $(ls "$DEST")" | tee -a "$LOG"
