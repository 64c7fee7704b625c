#!/usr/bin/env bash
# LibriSpeech: train-clean-100 for training, dev-clean held out for evaluation; 16 kHz, 8-level residual
# codec (hop 128); the prior is conditioned on the speaker.
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--nj J] [--force]
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=recipes/librispeech/db.sh
. ./db.sh

layout=librispeech
corpus_var=LIBRISPEECH
labels=true
prepare_opts=(--subsets "train-clean-100,dev-clean")
train_opts=(--segment 16384)
prior_opts=(--seq-len 256)
sample_opts=(--seconds 4 -n 4)
smoke_train=8
smoke_heldout=2
smoke_train_opts=(--segment 4096)
smoke_prior_opts=(--seq-len 32)
smoke_sample_opts=(--seconds 0.5 -n 1)

get_data() {
    local part
    if [ ! -d "$LIBRISPEECH/train-clean-100" ] && [ "$LIBRISPEECH" = downloads/LibriSpeech ]; then
        for part in train-clean-100 dev-clean; do
            fetch "$LIBRISPEECH_URL/$part.tar.gz" downloads || die "cannot download $LIBRISPEECH_URL/$part.tar.gz (no network?): set LIBRISPEECH in db.sh to a local copy"
        done
    fi
    require_dir LIBRISPEECH
    [ -d "$LIBRISPEECH/train-clean-100" ] || die "LIBRISPEECH=$LIBRISPEECH has no train-clean-100/: set LIBRISPEECH in db.sh"
    [ -d "$LIBRISPEECH/dev-clean" ] || die "LIBRISPEECH=$LIBRISPEECH has no dev-clean/ (the held-out part): set LIBRISPEECH in db.sh"
}

# shellcheck source=recipes/common/pipeline.sh
. ../common/pipeline.sh "$@"
