# shellcheck shell=bash
# Corpus locations (ESPnet-style db.sh); the environment overrides them.
# ASTERISK: folder holding the voice folders en_US_f_Allison/ es_MX_f_Allison/ fr_CA_f_June/ it_IT_m_Carlo/, from
#   apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav
ASTERISK=${ASTERISK:-/usr/share/asterisk/sounds}
