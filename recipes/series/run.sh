#!/usr/bin/env bash
# A generalist time-series tokenizer (TOTEM-style): one channels=1 VQ-VAE with RevIN that codes every channel of any
# series separately (hop 4, K=256, 1..4 residual levels = 2..8 bits/sample), trained on the TRAIN splits of every
# UCR/UEA set shipped inside aeon (split into single channels) plus seeded synthetic series. TEST splits are the
# benchmark's: benchmarks/bench_series.py --model $exp/vqvae/best.
#   ./run.sh [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--force]   (EXCLUDE=SET,... leaves sets out)
# Stages: 0 data (local/make_data.py), 1 train, 2 export, 3 benchmark on the TEST splits (benchmarks/bench_series.py).
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
bench_opts=()
if $smoke; then
    bench_opts=(--sets ItalyPowerDemand --bits 2)
    data_opts=(--synthetic 4 --max-per-set 3)
    train_opts=(--segment 32 --valid-fraction 0.2 --no-plots)
    conf=conf/vqvae_smoke.json
fi
log "exp=$exp smoke=$smoke stages $stage..$stop_stage exclude='$EXCLUDE'"

stage_data() {
    "$PYTHON" local/make_data.py --out "$exp/data" --exclude "$EXCLUDE" "${data_opts[@]}"
}

stage_train() {
    train_or_resume "$exp/data/train.txt" "$exp/vqvae" "$conf" "${train_opts[@]}"
}

stage_export() {
    vqa export "$exp/vqvae" -o "$exp/model" --force
}

stage_bench() {  # tables and verdicts in $exp/bench.txt, every number in $exp/bench.json
    "$PYTHON" ../../benchmarks/bench_series.py --model "$exp/model" --train-info "$exp/data/info.json" \
        --json "$exp/bench.json" "${bench_opts[@]}" > "$exp/bench.txt.tmp"
    mv "$exp/bench.txt.tmp" "$exp/bench.txt"
    grep '^verdict' "$exp/bench.txt" >&2 || true
}

run_stage 0 data stage_data
run_stage 1 train stage_train
run_stage 2 export stage_export
run_stage 3 bench stage_bench
log "finished stages $stage..$stop_stage in $exp"
