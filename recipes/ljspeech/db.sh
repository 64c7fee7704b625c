# shellcheck shell=bash
# Corpus locations (ESPnet-style db.sh); the environment overrides them.
# LJSPEECH: folder with metadata.csv and wavs/LJ001-0001.wav ... (LJSpeech-1.1).
# Left at downloads/LJSpeech-1.1, stage 0 downloads it (2.6 GB) when the network allows.
LJSPEECH=${LJSPEECH:-downloads/LJSpeech-1.1}
LJSPEECH_URL=${LJSPEECH_URL:-https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2}
