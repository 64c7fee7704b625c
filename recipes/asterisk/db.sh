# shellcheck shell=bash
# Corpus locations (ESPnet-style db.sh); the environment overrides them.
# ASTERISK: folder with <lang>/ prompt folders, from the Debian/Ubuntu packages
#   apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav
ASTERISK=${ASTERISK:-/usr/share/asterisk/sounds}
