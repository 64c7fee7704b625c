# shellcheck shell=bash disable=SC2034  # the variables set here are used by the sourcing script
# Shared helpers of the vqaudio recipes (sourced by recipes/<dataset>/run.sh through pipeline.sh):
# option parsing, logging, and stages that run once (done markers under $exp/.done).

log() { echo "[$(date -u +%H:%M:%S)] $(basename "$PWD"): $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    cat >&2 <<USAGE
usage: $0 [--stage N] [--stop-stage M] [--smoke] [--exp DIR] [--nj J] [--force]
  stages: 0 data, 1 manifest, 2 train VQ-VAE, 3 evaluate codec, 4 extract tokens, 5 train prior, 6 sample
  --smoke   every stage on a handful of files with a tiny model (minutes); outputs in exp/smoke
  --exp     output folder (default exp/full, or exp/smoke; also \$EXP)
  --force   redo the selected stages even if they are marked done
environment: VQAUDIO (the CLI, default 'vqaudio'), PYTHON (for recipes/common/prepare.py, default python3)
USAGE
}

# parse_options "$@": sets stage, stop_stage, smoke, exp, nj, force
parse_options() {
    stage=0 stop_stage=100 smoke=false exp=${EXP:-} nj=${NJ:-1} force=false
    while [ $# -gt 0 ]; do
        case $1 in
            --stage) stage=${2:?--stage needs a number}; shift 2 ;;
            --stop-stage|--stop_stage) stop_stage=${2:?--stop-stage needs a number}; shift 2 ;;
            --smoke) smoke=true; shift ;;
            --exp) exp=${2:?--exp needs a folder}; shift 2 ;;
            --nj) nj=${2:?--nj needs a number}; shift 2 ;;
            --force) force=true; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage; die "unknown option $1" ;;
        esac
    done
    case $stage$stop_stage in *[!0-9]*) die "--stage and --stop-stage take integers" ;; esac
    if [ -z "$exp" ]; then
        if $smoke; then exp=exp/smoke; else exp=exp/full; fi
    fi
    mkdir -p "$exp/.done"
}

# run_stage N NAME CMD...: run CMD when N is within [stage, stop_stage] and the stage is not done yet;
# a done marker is written only when CMD succeeds, so a failed or interrupted stage runs again.
run_stage() {
    local n=$1 name=$2 marker
    shift 2
    marker=$exp/.done/$n.$name
    if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then
        return 0
    fi
    if [ -e "$marker" ] && ! $force; then
        log "stage $n ($name): done already ($marker); --force to redo"
        return 0
    fi
    log "stage $n ($name): start"
    local t0=$SECONDS
    "$@"
    date -u +%FT%TZ > "$marker"
    log "stage $n ($name): done in $((SECONDS - t0)) s"
}

# require_dir VAR: fail fast unless the folder named by the variable VAR exists
require_dir() {
    local var=$1
    local dir=${!var:-}
    [ -n "$dir" ] || die "$var is empty: set it in db.sh (or the environment) to the corpus folder"
    [ -d "$dir" ] || die "$var=$dir does not exist: set $var in db.sh (or the environment) to the corpus folder"
}

# fetch URL DEST_DIR: download and unpack an archive into DEST_DIR (curl or wget); non-zero on failure
fetch() {
    local url=$1 dest=$2 file
    file=$dest/$(basename "$url")
    mkdir -p "$dest"
    if [ ! -s "$file" ]; then
        log "downloading $url"
        if command -v curl >/dev/null; then
            curl -fL --connect-timeout 20 --retry 1 -o "$file.part" "$url" || return 1
        else
            wget -q -T 20 -O "$file.part" "$url" || return 1
        fi
        mv "$file.part" "$file"
    fi
    case $file in
        *.zip) (cd "$dest" && unzip -qo "$(basename "$file")") ;;
        *.tar.gz|*.tgz) tar -xzf "$file" -C "$dest" ;;
        *.tar.bz2) tar -xjf "$file" -C "$dest" ;;
        *) return 1 ;;
    esac
}

# train_or_resume DATA DIR CONF [FLAGS...]: `vqaudio train` into DIR, resuming the run there if one was stopped
train_or_resume() {
    local data=$1 dir=$2 conf=$3 resume=()
    shift 3
    [ -d "$dir/last" ] && resume=(--resume)
    vqa train --data "$data" --exp "$dir" --config "$conf" --no-progress "$@" "${resume[@]}"
}

# vqa CMD ARGS...: the vqaudio CLI ($VQAUDIO may be several words, e.g. "python -m vqaudio")
vqa() {
    # shellcheck disable=SC2086
    $VQAUDIO "$@"
}
