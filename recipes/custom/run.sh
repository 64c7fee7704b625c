#!/usr/bin/env bash
# Any folder of audio (recursive; any format soundfile reads). Set CUSTOM in db.sh. LABELS=true
# conditions the prior on the first-level sub-folder. Held out: 5% by name hash.
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--nj J] [--force]
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=recipes/custom/db.sh
. ./db.sh

layout=custom
corpus_var=CUSTOM
labels=$LABELS
prepare_opts=(--heldout-fraction 0.05)
train_opts=(--segment 16384)
prior_opts=(--seq-len 256)
sample_opts=(--seconds 4 -n 4)
smoke_train=8
smoke_heldout=2
smoke_train_opts=(--segment 4096)
smoke_prior_opts=(--seq-len 32)
smoke_sample_opts=(--seconds 0.5 -n 1)

get_data() {
    require_dir CUSTOM
}

# shellcheck source=recipes/common/pipeline.sh
. ../common/pipeline.sh "$@"
