# shellcheck shell=bash
# The series recipe needs no corpus folder: aeon ships its UCR/UEA sets, the rest is synthetic.
# EXCLUDE: comma-separated aeon sets kept out of training (leave-one-data-set-out), e.g. EXCLUDE=GunPoint.
EXCLUDE=${EXCLUDE:-}
