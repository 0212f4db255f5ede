#!/usr/bin/env bash
# Soak test by hand: N consecutive songs (default 100) from tiny fixture engines,
# in one process through the library API and as N separate heart-run
# processes, different seeds; prints songs, failures and the in-process RSS of
# the first vs last 10 songs. CI runs the same test with 10 songs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
bash scripts/setup-ort.sh
HEART_SOAK_SONGS="${1:-100}" cargo test -p heart-build --test soak -- --nocapture --test-threads 1
