#!/usr/bin/env bash
# Speech Commands v0.02: 1 s keyword clips at 16 kHz; testing_list.txt is held out; the prior is
# conditioned on the word.
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--nj J] [--force]
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=recipes/speechcommands/db.sh
. ./db.sh

layout=speechcommands
corpus_var=SPEECHCOMMANDS
labels=true
prepare_opts=()
train_opts=(--segment 16000)
prior_opts=(--seq-len 125)
sample_opts=(--seconds 1 -n 4)
smoke_train=8
smoke_heldout=2
smoke_train_opts=(--segment 4096)
smoke_prior_opts=(--seq-len 32)
smoke_sample_opts=(--seconds 0.5 -n 1)

get_data() {
    if [ ! -f "$SPEECHCOMMANDS/testing_list.txt" ] && [ "$SPEECHCOMMANDS" = downloads/speech_commands ]; then
        fetch "$SPEECHCOMMANDS_URL" downloads/speech_commands || die "cannot download $SPEECHCOMMANDS_URL (no network?): set SPEECHCOMMANDS in db.sh to a local copy"
    fi
    require_dir SPEECHCOMMANDS
}

# shellcheck source=recipes/common/pipeline.sh
. ../common/pipeline.sh "$@"
