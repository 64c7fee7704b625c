# shellcheck shell=bash
# speech8k reads Debian-packaged recordings from their own folders (recipes/common/voices.py lists them):
#   apt-get install asterisk-core-sounds-{en,es,fr,it}-wav asterisk-prompt-it-menardi-wav asterisk-prompt-fr-armelle \
#     asterisk-prompt-es-co klettres-data ktuberling-data fillets-ng-data-cs fillets-ng-data-nl
# The voice table conf/voices.tsv says which voices train, which are the unseen-voice evaluation set, which are dropped.
VOICES=${VOICES:-conf/voices.tsv}
HELDOUT=${HELDOUT:-../asterisk/conf/heldout.txt}  # the asterisk recipe's held-out prompts: never trained on here either
