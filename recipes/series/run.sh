#!/usr/bin/env bash
# A generalist time-series tokenizer (TOTEM-style): one channels=1 VQ-VAE with RevIN that codes every channel of any
# series separately (hop 4, K=256, 1..4 residual levels = 2..8 bits/sample), trained on the TRAIN splits of every
# UCR/UEA set shipped inside aeon (split into single channels) plus seeded synthetic series. TEST splits are the
# benchmark's (benchmarks/bench_series.py).
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--force]
# Stages: 0 data (local/make_data.py), 1 train, 2 export ($exp/model; without EXCLUDE, with SERIES_MODEL_DIR set,
# also to that folder: ../../vqaudio/pretrained/series replaces the shipped `series`, $VQAUDIO_MODELS/NAME installs
# it as the user model NAME),
# 3 leave-one-out models (stages 0-2 again for each set of LOO_SETS with EXCLUDE=SET, in $exp/loo/SET),
# 4 benchmark on the TEST splits (with the leave-one-out models: zero-shot), 5 class-conditioned prior over the
# series tokens of one aeon set (PRIOR_SET, its .ts files encoded a .vqa per case; the first PRIOR_NQ levels modelled),
# 20 samples of each class, and how many of them 1-NN on the set's TRAIN split puts in their class.
# Environment: EXCLUDE=SET,... leaves sets out of the data; LOO_SETS (default: the six benchmark sets; "" skips);
# SERIES_MODEL_DIR (where stage 2 also exports the model; ../../vqaudio/pretrained/series ships it in the package);
# PRIOR_SET (default GunPoint); PRIOR_NQ (default 1: the coarse level carries the class; with all four levels the
# samples of GunPoint's two classes were 1-NN of their class 58% of the time; with the first level alone, 84%).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=recipes/series/db.sh
. ./db.sh
# shellcheck source=recipes/common/lib.sh
. ../common/lib.sh
VQAUDIO=${VQAUDIO:-vqaudio}
PYTHON=${PYTHON:-python3}
parse_options "$@"

data_opts=(--synthetic 600)
train_opts=(--segment 128 --valid-fraction 0.02)
conf=conf/vqvae.json
prior_conf=conf/prior.json
bench_opts=()
loo_sets=${LOO_SETS-ACSF1,ArrowHead,BasicMotions,GunPoint,ItalyPowerDemand,OSULeaf}
smoke_flag=()
if $smoke; then
    bench_opts=(--sets ItalyPowerDemand --bits 2)
    data_opts=(--synthetic 4 --max-per-set 3)
    train_opts=(--segment 32 --valid-fraction 0.2 --no-plots)
    conf=conf/vqvae_smoke.json
    prior_conf=conf/prior_smoke.json
    loo_sets=${LOO_SETS-ItalyPowerDemand}
    smoke_flag=(--smoke)
fi
PRIOR_SET=${PRIOR_SET:-GunPoint}
PRIOR_NQ=${PRIOR_NQ:-1}
n_samples=20
log "exp=$exp smoke=$smoke stages $stage..$stop_stage exclude='$EXCLUDE'"

stage_data() {
    "$PYTHON" local/make_data.py --out "$exp/data" --exclude "$EXCLUDE" "${data_opts[@]}"
}

stage_train() {
    train_or_resume "$exp/data/train.txt" "$exp/vqvae" "$conf" "${train_opts[@]}"
}

stage_export() {  # $exp/model; with SERIES_MODEL_DIR also there (the package's folder ships it, a user model folder
    # installs it by that folder's name; the name `series` itself always means the shipped model)
    vqa export "$exp/vqvae" -o "$exp/model" --include MODEL_CARD.md --force
    if [ -n "$EXCLUDE" ]; then
        log "EXCLUDE='$EXCLUDE': a leave-one-out model, in $exp/model only"
        return 0
    fi
    if [ -z "${SERIES_MODEL_DIR:-}" ]; then
        log "exported to $exp/model (use it with --model $exp/model; SERIES_MODEL_DIR=DIR also exports it to DIR)"
        return 0
    fi
    mkdir -p "$(dirname "$SERIES_MODEL_DIR")"
    vqa export "$exp/vqvae" -o "$SERIES_MODEL_DIR" --include MODEL_CARD.md --force
    log "exported to $exp/model and $SERIES_MODEL_DIR"
}

stage_loo() {  # a model per held-out set, trained without any of that set's data (stages 0-2 of this recipe)
    local set
    for set in ${loo_sets//,/ }; do
        EXCLUDE=$set EXP="$exp/loo/$set" LOO_SETS="" bash ./run.sh --stop-stage 2 "${smoke_flag[@]}"
    done
}

stage_bench() {  # tables and verdicts in $exp/bench.txt, every number in $exp/bench.json
    local loo=()
    [ -d "$exp/loo" ] && loo=(--loo-models "$exp/loo")
    "$PYTHON" ../../benchmarks/bench_series.py --model "$exp/model" --train-info "$exp/data/info.json" \
        --json "$exp/bench.json" "${loo[@]}" "${bench_opts[@]}" > "$exp/bench.txt.tmp"
    mv "$exp/bench.txt.tmp" "$exp/bench.txt"
    grep '^verdict' "$exp/bench.txt" >&2 || true
}

stage_prior() {  # class-conditioned prior on PRIOR_SET's tokens: held-out NLL vs unigram entropy, samples per class
    local data split f name label steps i=0 tokens=$exp/prior/tokens
    data=$("$PYTHON" -c 'import aeon, os; print(os.path.join(os.path.dirname(aeon.__file__), "datasets", "data"))')
    rm -rf "$tokens" "$exp/prior/cases" "$exp/prior/wavenet" "$exp/prior/samples"  # the stage is redone whole (minutes)
    for split in TRAIN TEST; do  # a .vqa per case in a folder per class label; both splits in one corpus
        vqa encode "$data/$PRIOR_SET/${PRIOR_SET}_$split.ts" --model "$exp/model" -o "$exp/prior/cases/$split"
        for f in "$exp/prior/cases/$split"/*/*.vqa; do
            name=${f#"$exp/prior/cases/$split/"}
            mkdir -p "$tokens/$(dirname "$name")"
            mv "$f" "$tokens/$(dirname "$name")/$split-$(basename "$name")"
        done
    done
    rm -rf "$exp/prior/cases"
    vqa train-prior --codec "$exp/model" --data "$tokens" --labels --exp "$exp/prior/wavenet" --config "$prior_conf" \
        --n-q "$PRIOR_NQ" --seq-len 64 --valid-fraction 0.2 --no-progress 2> "$exp/prior/train.log" || { cat "$exp/prior/train.log" >&2; return 1; }
    grep 'held-out NLL' "$exp/prior/train.log" > "$exp/prior/report.txt"
    steps=$("$PYTHON" -c "from aeon.datasets import load_classification as l; print(l('$PRIOR_SET', split='test')[0].shape[-1])")
    for label in $(find "$tokens" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | LC_ALL=C sort); do
        # label ids follow the sorted folder names (vqaudio train-prior --labels)
        vqa sample --prior "$exp/prior/wavenet" --codec "$exp/model" --label "$i" -n "$n_samples" --seconds "$steps" \
            --seed 0 -o "$exp/prior/samples/$label" --force > /dev/null
        i=$((i + 1))
    done
    "$PYTHON" local/check_samples.py "$PRIOR_SET" "$exp/prior/samples" >> "$exp/prior/report.txt"
    cat "$exp/prior/report.txt" >&2
}

run_stage 0 data stage_data
run_stage 1 train stage_train
run_stage 2 export stage_export
run_stage 3 loo stage_loo
run_stage 4 bench stage_bench
run_stage 5 prior stage_prior
log "finished stages $stage..$stop_stage in $exp"
