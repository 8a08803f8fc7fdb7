#!/usr/bin/env bash
# Install what `revati trace --backend bpf` needs on Debian/Ubuntu: bcc's Python module
# (apt python3-bpfcc; the PyPI package named "bcc" is unrelated) and kernel headers that bcc
# can compile its probes against.
#
# Usage:  sudo tracer/install_bpf_deps.sh          # install (idempotent)
#         tracer/install_bpf_deps.sh --check       # say what is missing, change nothing
#
# Headers: when the running kernel has no matching linux-headers package (cloud and VM
# kernels often do not), the distribution's default headers are installed and
# /lib/modules/$(uname -r)/{build,source} are pointed at them. Uprobes on user-space
# libraries read only registers and user memory, so a header version that differs from the
# running kernel is enough for them (it would not be for kprobes on kernel structs).
# Undo the symlinks with: rm -r /lib/modules/$(uname -r)
set -euo pipefail

kernel="$(uname -r)"
modules="/lib/modules/${kernel}"

# bcc's module lives in the system Python's dist-packages; a pyenv/venv Python reaches it
# through sys.path (revati's bpf backend appends the same folder).
DIST=/usr/lib/python3/dist-packages
PY="$(command -v python3 || echo /usr/bin/python3)"

have_bcc() {
    "$PY" -c "import sys; sys.path.append('${DIST}'); import bcc" >/dev/null 2>&1
}

have_headers() {
    [ -e "${modules}/build/include/linux/kconfig.h" ] || [ -e "${modules}/build/include/generated/autoconf.h" ]
}

if [ "${1:-}" = "--check" ]; then
    missing=0
    if [ "$(id -u)" != 0 ]; then echo "missing: root (uprobes need root or CAP_BPF+CAP_PERFMON)"; missing=1; fi
    if ! have_bcc; then echo "missing: python3-bpfcc (apt-get install python3-bpfcc)"; missing=1; fi
    if ! have_headers; then echo "missing: kernel headers under ${modules}/build (run this script as root)"; missing=1; fi
    [ "$missing" = 0 ] && echo "bpf backend: everything is in place"
    exit "$missing"
fi

if [ "$(id -u)" != 0 ]; then
    echo "install_bpf_deps.sh: must run as root (apt-get and /lib/modules)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

if ! have_bcc || ! have_headers; then
    apt-get update -qq
fi

if ! have_bcc; then
    apt-get install -y -qq --no-install-recommends python3-bpfcc >/dev/null
fi

if ! have_headers; then
    if apt-get install -y -qq --no-install-recommends "linux-headers-${kernel}" >/dev/null 2>&1; then
        echo "installed linux-headers-${kernel}"
    else
        # No headers for this exact kernel: take the distribution's default ones.
        apt-get install -y -qq --no-install-recommends linux-headers-amd64 >/dev/null
        arch_dir="$(ls -d /usr/src/linux-headers-*-amd64 | grep -v -e cloud -e rt | sort -V | tail -n 1)"
        common_dir="${arch_dir%-amd64}-common"
        mkdir -p "${modules}"
        ln -sfn "${arch_dir}" "${modules}/build"
        ln -sfn "${common_dir}" "${modules}/source"
        echo "linked ${modules}/build -> ${arch_dir} (running kernel ${kernel} has no header package)"
    fi
fi

"$PY" - <<PY
import sys
sys.path.append("${DIST}")
import bcc
bcc.BPF(text="int revati_probe_check(void *ctx) { return 0; }")
print("bcc compiles probes: ok")
PY
echo "bpf dependencies ready in $(( $(date +%s) - start )) s"
