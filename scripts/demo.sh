#!/usr/bin/env bash
# The main job on a fresh machine: tags + lyrics -> song.wav.
#
#   bash scripts/demo.sh [CHECKPOINT_DIR]
#
# CHECKPOINT_DIR is a HeartMuLa release folder (HeartMuLa-oss-3B/, HeartCodec-oss/,
# tokenizer.json, gen_config.json). Without one, a random checkpoint with the real
# layout is synthesized (size from HEART_SIZE: tiny, small (default) or full), so
# the whole pipeline runs without downloading weights. Output: song.wav and
# engines/demo-<name>/. Settings: HEART_DURATION (seconds, default 10), HEART_SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
bash scripts/setup-ort.sh
cargo build --release --quiet -p heart-build -p heart-run
bin=target/release

size="${HEART_SIZE:-small}"
if [ $# -ge 1 ]; then
  ckpt="$1"
  name="$(basename "$ckpt")"
else
  ckpt="target/synth-$size"
  name="synth-$size"
  [ -d "$ckpt" ] || "$bin/heart-build" synth --size "$size" --out "$ckpt"
fi
engines="engines/demo-$name"
[ -f "$engines/manifest.toml" ] || "$bin/heart-build" --mula "$ckpt/HeartMuLa-oss-3B" --codec "$ckpt/HeartCodec-oss" --out "$engines"
"$bin/heart-run" --engines "$engines" \
  --tags "piano,happy,wedding" \
  --lyrics $'[verse]\nthe sun creeps in across the floor\n[chorus]\nevery day the light returns\n' \
  --duration "${HEART_DURATION:-10}" --seed "${HEART_SEED:-0}" --out song.wav
