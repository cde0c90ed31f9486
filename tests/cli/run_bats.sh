#!/bin/sh
# run_bats.sh BATS_FILE: runs the wf command's bats suite (TAP on stdout);
# skipped (77) when bats is not installed. The paths of the programs and
# plugins come in the environment (tests/meson.build).
command -v bats >/dev/null 2>&1 || { echo "bats not found: skipped"; exit 77; }
exec bats --tap "$1"
