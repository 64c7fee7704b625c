# shellcheck shell=bash
# Corpus locations (ESPnet-style db.sh); the environment overrides them.
# CUSTOM: your folder of audio files (no download).
CUSTOM=${CUSTOM:-}
# LABELS=true: one label per first-level sub-folder of $CUSTOM (at least two) for the prior
LABELS=${LABELS:-false}
