# shellcheck shell=bash
# Corpus locations (ESPnet-style db.sh); the environment overrides them.
# LIBRISPEECH: folder with train-clean-100/<speaker>/<chapter>/*.flac (+ dev-clean/ for evaluation).
# Left at downloads/LibriSpeech, stage 0 downloads both parts (6.3 GB) when the network allows.
LIBRISPEECH=${LIBRISPEECH:-downloads/LibriSpeech}
LIBRISPEECH_URL=${LIBRISPEECH_URL:-https://www.openslr.org/resources/12}
