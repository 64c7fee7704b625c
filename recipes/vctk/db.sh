# shellcheck shell=bash
# Corpus locations (ESPnet-style db.sh); the environment overrides them.
# VCTK: folder with wav48_silence_trimmed/<speaker>/<speaker>_<utt>_mic1.flac (VCTK-Corpus-0.92).
# Left at downloads/vctk, stage 0 downloads it (about 11 GB) when the network allows.
VCTK=${VCTK:-downloads/vctk}
VCTK_URL=${VCTK_URL:-https://datashare.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip}
