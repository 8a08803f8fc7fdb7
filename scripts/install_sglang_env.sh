#!/usr/bin/env bash
# Create the Python environment revati emulates SGLang in.
#
# usage: scripts/install_sglang_env.sh [VENV_DIR]      (default: $REVATI_SGLANG_VENV or .venv-sglang)
#
# What it installs: sglang==0.5.23 (PyPI's wheel: the CUDA build's Python package plus a few Rust
# extensions, no CUDA code) and sglang-kernel==0.4.10 (its Python wrappers are used; its CUDA
# libraries never load) WITHOUT their dependencies, on the CPU build of torch 2.13, plus the
# part of SGLang's dependency list that installs and imports on a CPU-only machine (pinned as
# SGLang pins them), plus revati itself (editable) and its dependencies. Never a CUDA build of
# torch: the script stops if one got in.
#
# Why --no-deps: SGLang 0.5.23 requires torch==2.14.1 (PyPI's is the CUDA 13 build, ~550 MB plus
# ~2 GB of nvidia-* wheels) and CUDA-only packages: flashinfer-python[cu13], flash-attn-4,
# cuda-python, humming-kernels, nvidia-cutlass-dsl, nvidia-mathdx, nvshmem4py-cu13, quack-kernels,
# sgl-deep-ep, sgl-deep-gemm, sgl-flash-mla, tilelang, torch_memory_saver, torchaudio, torchcodec.
# None of them is imported unguarded on the CUDA path revati emulates (its adapter keeps SGLang
# off the ones that are: shim/engines/sglang), so they are left out. sglang-kernel is the
# exception: imported unguarded, its wheel (only a CUDA one exists; its .so files link
# libtorch_cuda, libcudart.so.13, libcuda.so.1) is installed for its Python package. The torch pin
# is relaxed to the CPU 2.13.0 build (the one the project pins in constraints/cpu.txt).
# `pip check` therefore reports sglang's requirements as unmet: that is expected.
#
# torchvision stays (model_runner imports it through sglang.srt.multimodal): PyPI's wheel is built
# for the CUDA torch and its import fails on the CPU build ("operator torchvision::nms does not
# exist") unless revati.shim.engines.torchvision_compat is installed first, as revati's shim does.
#
# Idempotent and fast when nothing changed: a stamp in the venv records the inputs (this script,
# constraints/cpu.txt, pyproject.toml); with the same stamp it only verifies the environment.
#
# Environment:
#   PYTHON              interpreter to build the venv with (default: python3.11, else python3)
#   REVATI_TORCH_INDEX  extra package index holding torch==2.13.0+cpu, used for the torch step only
#                       (default https://download.pytorch.org/whl/cpu; set it empty where a local
#                       wheel directory or mirror provides the CPU wheel, e.g. through PIP_FIND_LINKS)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${REVATI_SGLANG_VENV:-$REPO/.venv-sglang}}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TORCH_INDEX="${REVATI_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
SGLANG_SPEC="sglang==0.5.23"
# SGLang's CUDA path imports sgl_kernel unguarded; the wheel's Python wrappers run as they are and
# revati stands in for its compiled libraries (shim/engines/sglang/oplib.py), which link the CUDA
# runtime and do not load on the CPU build of torch.
SGL_KERNEL_SPEC="sglang-kernel==0.4.10"
TORCH_SPEC="torch==2.13.0+cpu"

# SGLang 0.5.23's Requires-Dist, less the CUDA-only entries above, the aarch64-only ones (av,
# decord2) and torch/torchaudio/torchcodec; its pins kept. datasets brings dill, which
# sglang.srt.sampling.custom_logit_processor imports at module level.
SGLANG_DEPS=(
    aiohttp "anthropic>=0.20.0" "apache-tvm-ffi==0.1.11" "blobfile==3.0.0" build
    "compressed-tensors==0.18.0" datasets "deepseek-recipe==0.2.0" distro easydict einops fastapi
    gguf interegular IPython "kernels>=0.14.1,<0.15" "llguidance>=1.7.6,<2.0.0"
    "mistral_common>=1.11.5" modelscope msgspec ninja "numba==0.65.1" numpy nvidia-ml-py
    "openai==2.8.0" "openai-harmony==0.0.4" orjson "outlines==0.1.11" packaging partial_json_parser
    pillow "prometheus-client>=0.20.0" psutil py-spy pybase64 pydantic "python-dateutil<3"
    python-multipart "pyzmq>=25.1.2" regex requests scipy "sentencepiece==0.2.1" setproctitle
    "smg-grpc-servicer>=0.9.0" "soundfile==0.13.1" tiktoken "timm==1.0.25" "tml-renderers==0.1.0"
    "tokenizers==0.23.2" torchvision tqdm "transformers==5.19.0" triton "uvicorn>=0.51" uvloop
    watchfiles "xgrammar==0.2.7" xxhash zstandard
)
REVATI_DEPS=(numpy pyarrow duckdb click rich pyyaml scipy pytest hypothesis)

stamp_inputs() {
    cat "$REPO/scripts/install_sglang_env.sh" "$REPO/constraints/cpu.txt" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1
}

verify() {
    "$VENV/bin/python" -W ignore - <<'EOF'
import importlib.metadata as md
import torch
assert torch.version.cuda is None, f"a CUDA build of torch is installed ({torch.__version__}); remove the venv"
assert torch.__version__.startswith("2.13."), torch.__version__
version = md.version("sglang")
assert version == "0.5.23", version
assert md.version("sglang-kernel") == "0.4.10", md.version("sglang-kernel")
import revati.shim.engines  # noqa: F401  (the shim resolves to this checkout)
from revati.shim.engines import torchvision_compat
torchvision_compat.install()  # PyPI's torchvision is built for the CUDA torch (see the script)
import sglang.srt.server_args  # noqa: F401  (sglang and the dependencies it imports at start)
print(f"sglang {version}, torch {torch.__version__}, triton {md.version('triton')}")
EOF
}

STAMP="$VENV/.revati-sglang-env"
WANT="$(stamp_inputs)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && have="$(verify 2>/dev/null)"; then
    echo "revati SGLang environment up to date: $VENV ($have)"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -c "$REPO/constraints/cpu.txt")
TORCH_PIP=("${PIP[@]}")
if [[ -n "$TORCH_INDEX" ]]; then
    TORCH_PIP+=(--extra-index-url "$TORCH_INDEX")
fi

# The CPU build first, by its local version: where no CPU wheel is reachable this fails here
# instead of letting PyPI's CUDA build of the same version in.
"${TORCH_PIP[@]}" "$TORCH_SPEC"
# Everything else resolves against the installed torch (constraints/cpu.txt pins torch==2.13.0).
"${PIP[@]}" "${SGLANG_DEPS[@]}" "${REVATI_DEPS[@]}"
# Installed last and alone so pip does not list their deliberately unmet requirements.
"${PIP[@]}" --no-deps "$SGLANG_SPEC" "$SGL_KERNEL_SPEC"
# torchaudio/torchcodec from PyPI are built for the CUDA torch and fail to load on the CPU build;
# nothing above asks for them, but a stale venv may hold them.
"$VENV/bin/python" -m pip uninstall -y torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps -e "$REPO"

verify
echo "$WANT" > "$STAMP"
echo "revati SGLang environment ready in $(( $(date +%s) - start )) s: $VENV ($(du -sh "$VENV" | cut -f1))"
