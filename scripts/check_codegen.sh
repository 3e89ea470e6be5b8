#!/usr/bin/env bash
# Codegen check of the crate's kernels (the logic and its documentation are in
# scripts/check_codegen.py): no gather/scatter instruction in the crate, every
# microkernel k-loop holds only FMAs, A broadcasts, B loads and loop control, and
# llvm-mca predicts each k-loop at the FMA bound on skylake-avx512, znver4 and the
# host's model. Needs GNU binutils (objdump, as), python3 and llvm-mca-19
# (Debian: apt-get install -y llvm-19).
#
#   scripts/check_codegen.sh               build release, check, print the llvm-mca table
#   scripts/check_codegen.sh --self-test   the detectors on built-in snippets
#   scripts/check_codegen.sh --help        every option
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/check_codegen.py "$@"
