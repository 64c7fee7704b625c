# shellcheck shell=bash
# Corpus locations (ESPnet-style db.sh); the environment overrides them.
# SPEECHCOMMANDS: folder with <word>/<hash>_nohash_<n>.wav and testing_list.txt (speech_commands_v0.02).
# Left at downloads/speech_commands, stage 0 downloads it (2.3 GB) when the network allows.
SPEECHCOMMANDS=${SPEECHCOMMANDS:-downloads/speech_commands}
SPEECHCOMMANDS_URL=${SPEECHCOMMANDS_URL:-http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz}
