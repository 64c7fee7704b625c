#!/usr/bin/env bash
# LJSpeech 1.1: one speaker, 22.05 kHz; 8-level residual codec (hop 128). Held out: 2% by name hash.
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--nj J] [--force]
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=recipes/ljspeech/db.sh
. ./db.sh

layout=ljspeech
corpus_var=LJSPEECH
labels=false
prepare_opts=(--heldout-fraction 0.02)
train_opts=(--segment 16384)
prior_opts=(--seq-len 256)
sample_opts=(--seconds 4 -n 4)
smoke_train=8
smoke_heldout=2
smoke_train_opts=(--segment 4096)
smoke_prior_opts=(--seq-len 32)
smoke_sample_opts=(--seconds 0.5 -n 1)

get_data() {
    if [ ! -f "$LJSPEECH/metadata.csv" ] && [ "$LJSPEECH" = downloads/LJSpeech-1.1 ]; then
        fetch "$LJSPEECH_URL" downloads || die "cannot download $LJSPEECH_URL (no network?): set LJSPEECH in db.sh to a local LJSpeech-1.1 copy"
    fi
    require_dir LJSPEECH
    [ -f "$LJSPEECH/metadata.csv" ] || die "LJSPEECH=$LJSPEECH has no metadata.csv: set LJSPEECH in db.sh"
}

# shellcheck source=recipes/common/pipeline.sh
. ../common/pipeline.sh "$@"
