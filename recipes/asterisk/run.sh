#!/usr/bin/env bash
# Asterisk prompts (real 8 kHz telephone speech in en/es/fr/it, one voice each, read from its own folder).
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--nj J]
# Held-out prompts (stage 3 evaluation): conf/heldout.txt. The prior is conditioned on the language.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=recipes/asterisk/db.sh
. ./db.sh

layout=asterisk
corpus_var=ASTERISK
labels=true
voices=(en_US_f_Allison es_MX_f_Allison fr_CA_f_June it_IT_m_Carlo)  # recipes/common/voices.py ASTERISK_CORE
prepare_opts=(--subsets "$(IFS=,; echo "${voices[*]}")" --heldout-list conf/heldout.txt)
train_opts=(--segment 8192)
prior_opts=(--seq-len 256)
sample_opts=(--seconds 4 -n 4)
smoke_train=12
smoke_heldout=4
smoke_train_opts=(--segment 2048)
smoke_prior_opts=(--seq-len 64)
smoke_sample_opts=(--seconds 0.5 -n 1)

get_data() {  # installed by apt (no download): check each voice's own folder (never the <lang> links)
    require_dir ASTERISK
    local voice
    for voice in "${voices[@]}"; do
        [ -d "$ASTERISK/$voice" ] || die "no $ASTERISK/$voice: apt-get install asterisk-core-sounds-${voice%%_*}-wav, or set ASTERISK in db.sh"
    done
}

# shellcheck source=recipes/common/pipeline.sh
. ../common/pipeline.sh "$@"
