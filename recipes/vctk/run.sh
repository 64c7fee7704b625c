#!/usr/bin/env bash
# VCTK 0.92 (the VQ-VAE paper's data set): 16 kHz model, hop 64, one codebook of 512; the prior is
# conditioned on the speaker. Held out: 2% of the utterances by name hash (every speaker stays in training).
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--nj J] [--force]
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=recipes/vctk/db.sh
. ./db.sh

layout=vctk
corpus_var=VCTK
labels=true
prepare_opts=(--heldout-fraction 0.02)
train_opts=(--segment 16384)
prior_opts=(--seq-len 256)
sample_opts=(--seconds 4 -n 4)
smoke_train=12
smoke_heldout=3
smoke_train_opts=(--segment 4096)
smoke_prior_opts=(--seq-len 32)
smoke_sample_opts=(--seconds 0.5 -n 1)

get_data() {
    if [ ! -d "$VCTK/wav48_silence_trimmed" ] && [ "$VCTK" = downloads/vctk ]; then
        fetch "$VCTK_URL" downloads/vctk || die "cannot download $VCTK_URL (no network?): set VCTK in db.sh to a local VCTK 0.92 copy"
    fi
    require_dir VCTK
    [ -d "$VCTK/wav48_silence_trimmed" ] || [ -d "$VCTK/wav48" ] || die "VCTK=$VCTK has no wav48_silence_trimmed/: set VCTK in db.sh"
}

# shellcheck source=recipes/common/pipeline.sh
. ../common/pipeline.sh "$@"
