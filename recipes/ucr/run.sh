#!/usr/bin/env bash
# UCR/UEA time series shipped inside aeon (offline): GunPoint, ArrowHead, BasicMotions, JapaneseVowels, ...
# The TEST split is held out; the prior is conditioned on the class.
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--nj J] [--force]
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=recipes/ucr/db.sh
. ./db.sh

layout=ucr
corpus_var=UCR
labels=true
prepare_opts=()
train_opts=()
prior_opts=(--seq-len 32)
sample_opts=(--seconds 150 -n 4)
smoke_train=16
smoke_heldout=4
smoke_train_opts=()
smoke_prior_opts=(--seq-len 16)
smoke_sample_opts=(--seconds 32 -n 1)

get_data() {  # shipped with aeon: check it is importable by $PYTHON (stage 1 checks the name)
    "$PYTHON" -c "import aeon" 2>/dev/null || die "the ucr recipe needs the aeon package in PYTHON=$PYTHON"
    [ -n "$UCR" ] || die "UCR is empty: set UCR in db.sh to an aeon data set name (e.g. GunPoint)"
}

# shellcheck source=recipes/common/pipeline.sh
. ../common/pipeline.sh "$@"
