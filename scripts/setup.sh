#!/usr/bin/env bash
# Sets vqaudio up on a fresh Debian/Ubuntu machine, from scratch and offline apart from the package
# registries: system packages (real 8 kHz speech for tests and recipes, Codec2/Opus baselines), a
# virtual environment .venv with torch/torchaudio 2.11.0, and the package with its compiled
# extension (CUDA kernels too whenever a complete CUDA toolkit is found; VQAUDIO_CUDA=0|1 forces the
# choice, see setup.py). The optional metric packages of the `eval` extra (PESQ, STOI) are installed
# last, each on its own: one that cannot be built is a warning, never a failed setup (the metrics and
# the tests that need them then say they are missing).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
              asterisk-core-sounds-it-wav codec2 opus-tools sox shellcheck)
# More recorded speech (other voices and languages), installed without their recommended packages.
apt_speech=(asterisk-prompt-es-co asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav klettres-data
            ktuberling-data fillets-ng-data-cs fillets-ng-data-nl)
missing_from() {  # the packages among "$@" that dpkg does not list as installed
  local p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done
}
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  mapfile -t missing < <(missing_from "${apt_packages[@]}")
  mapfile -t missing_speech < <(missing_from "${apt_speech[@]}")
  if [ $(( ${#missing[@]} + ${#missing_speech[@]} )) -gt 0 ]; then
    echo "setup: installing ${missing[*]} ${missing_speech[*]}"
    $sudo apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ${#missing_speech[@]} -gt 0 ]; then
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_speech[@]}" >/dev/null
    fi
  fi
else
  echo "setup: apt-get not found; install ${apt_packages[*]} ${apt_speech[*]} yourself for the speech tests and baselines" >&2
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
# Everything the build of vqaudio._C needs, before it runs without build isolation.
"${pip[@]}" install setuptools wheel ninja pybind11 numpy torch==2.11.0 torchaudio==2.11.0
# The extension is built against the torch installed above (no build isolation: same ABI, no second download).
MAX_JOBS=${MAX_JOBS:-2} "${pip[@]}" install --no-build-isolation -e ".[test,bench,series]"
# The `eval` extra (read from the installed metadata, so pyproject.toml stays the one list), one
# package at a time and with build isolation: a source build brings its own build requirements.
mapfile -t optional < <(.venv/bin/python -c '
import re
from importlib.metadata import requires
for r in requires("vqaudio") or []:
    if re.search(r"extra\s*==\s*.eval.", r):
        print(r.split(";")[0].strip())')
for p in "${optional[@]}"; do
  log=.venv/setup-${p//[^A-Za-z0-9._-]/_}.log
  "${pip[@]}" install "$p" >"$log" 2>&1 ||
    echo "setup: warning: the optional package $p could not be installed (pip's output: $log); vqaudio works without it, the metrics and tests that need it are skipped" >&2
done
.venv/bin/python -c "
import vqaudio.ops as o, torch
cuda = o.build_record() or {}
print('setup: vqaudio kernel', o.KERNEL, '| CPU ISA', torch.ops.vqaudio.cpu_isa() if o.KERNEL == 'compiled' else '-',
      '| CUDA kernel built', o.has_cuda_kernel(), '(' + cuda.get('reason', 'no build record') + ')')"
