# shellcheck shell=bash disable=SC2154  # variables come from lib.sh and the recipe's run.sh
# The stages every vqaudio recipe shares. recipes/<dataset>/run.sh sets the variables below, defines
# get_data (stage 0), then sources this file with its arguments. Every stage calls the vqaudio CLI.
#
#   layout          recipes/common/prepare.py layout (asterisk, vctk, ljspeech, librispeech, ...)
#   corpus_var      name of the db.sh variable holding the corpus folder (ucr: the aeon data set name)
#   prepare_opts    array: extra prepare.py options (--heldout-list, --labels, --subsets, ...)
#   labels          true: condition the prior on labels (speaker, language, word, class)
#   train_opts      array: extra `vqaudio train` flags (--segment, --valid-fraction, ...)
#   prior_opts      array: extra `vqaudio train-prior` flags (--seq-len, ...)
#   sample_opts     array: `vqaudio sample` length/number flags (--seconds S -n N, ...)
#   smoke_train, smoke_heldout   files used by --smoke; smoke_{train,prior,sample}_opts: --smoke's option arrays
# Configs: conf/vqvae.json and conf/prior.json ({"model": {...}, "train": {...}}), conf/*_smoke.json for --smoke.

set -euo pipefail
recipe_dir=$PWD
common_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=recipes/common/lib.sh
. "$common_dir/lib.sh"
VQAUDIO=${VQAUDIO:-vqaudio}
PYTHON=${PYTHON:-python3}
parse_options "$@"

for name in prepare_opts train_opts prior_opts sample_opts smoke_train_opts smoke_prior_opts smoke_sample_opts; do
    declare -p "$name" >/dev/null 2>&1 || declare -a "$name=()"
done
suffix=""
prep_limits=()
if $smoke; then  # smoke_*_opts replace the full run's options
    suffix=_smoke
    prep_limits=(--max-train "${smoke_train:-16}" --max-heldout "${smoke_heldout:-4}")
    train_opts=("${smoke_train_opts[@]}")
    prior_opts=("${smoke_prior_opts[@]}")
    sample_opts=("${smoke_sample_opts[@]}")
fi
vqvae_conf=$recipe_dir/conf/vqvae$suffix.json
prior_conf=$recipe_dir/conf/prior$suffix.json
for f in "$vqvae_conf" "$prior_conf"; do
    [ -f "$f" ] || die "missing config $f"
done
case ${labels:=false} in true|false) ;; *) die "labels must be true or false, got '$labels'" ;; esac
label_opt=()
if $labels; then
    label_opt=(--labels)
fi
log "exp=$exp smoke=$smoke stages $stage..$stop_stage VQAUDIO='$VQAUDIO'"

stage_manifest() {
    "$PYTHON" "$common_dir/prepare.py" "$layout" --root "${!corpus_var:-}" --out "$exp/data" --var "$corpus_var" \
        "${label_opt[@]}" "${prepare_opts[@]}" "${prep_limits[@]}"
}

stage_train() {
    train_or_resume "$exp/data/train.txt" "$exp/vqvae" "$vqvae_conf" "${train_opts[@]}"
}

stage_eval() {
    vqa eval --codec "$exp/vqvae" --data "$exp/data/heldout.txt" -o "$exp/eval" --pca-fit "$exp/data/train.txt" \
        --no-progress --force
}

stage_tokens() {
    vqa encode "$exp/data/train" -o "$exp/tokens" --model "$exp/vqvae" --jobs "$nj" --no-progress
}

stage_prior() {
    local resume=()
    [ -d "$exp/prior/last" ] && resume=(--resume)
    vqa train-prior --codec "$exp/vqvae" --data "$exp/tokens" --exp "$exp/prior" --config "$prior_conf" \
        --no-progress "${label_opt[@]}" "${prior_opts[@]}" "${resume[@]}"
}

stage_sample() {
    local label=()
    if $labels; then
        label=(--label 0)
    fi
    vqa sample --prior "$exp/prior" --codec "$exp/vqvae" --seed 0 -o "$exp/samples" "${label[@]}" "${sample_opts[@]}"
}

run_stage 0 data get_data
run_stage 1 manifest stage_manifest
run_stage 2 train stage_train
run_stage 3 eval stage_eval
run_stage 4 tokens stage_tokens
run_stage 5 prior stage_prior
run_stage 6 sample stage_sample
log "finished stages $stage..$stop_stage in $exp"
