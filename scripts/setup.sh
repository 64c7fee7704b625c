#!/usr/bin/env bash
# Sets vqaudio up on a fresh Debian/Ubuntu machine, from scratch and offline apart from the package
# registries: system packages (real 8 kHz speech for tests and recipes, Codec2/Opus baselines), a
# virtual environment .venv with torch/torchaudio 2.11.0, and the package with its compiled
# extension (CUDA kernels too whenever nvcc is found; VQAUDIO_CUDA=0|1 forces the choice).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
              asterisk-core-sounds-it-wav codec2 opus-tools sox shellcheck)
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  missing=()
  for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
else
  echo "setup: apt-get not found; install ${apt_packages[*]} yourself for the speech tests and baselines" >&2
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install setuptools wheel ninja pybind11 torch==2.11.0 torchaudio==2.11.0
# The extension is built against the torch installed above (no build isolation: same ABI, no second download).
MAX_JOBS=${MAX_JOBS:-2} "${pip[@]}" install --no-build-isolation -e ".[test,bench,series]"
.venv/bin/python -c "import vqaudio.ops as o, torch; print('setup: vqaudio kernel', o.KERNEL, '| CPU ISA', torch.ops.vqaudio.cpu_isa() if o.KERNEL == 'compiled' else '-', '| CUDA kernel built', o.has_cuda_kernel())"
