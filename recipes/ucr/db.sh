# shellcheck shell=bash
# Corpus locations (ESPnet-style db.sh); the environment overrides them.
# UCR: the aeon data set name (shipped with the aeon package; nothing is downloaded).
UCR=${UCR:-GunPoint}
