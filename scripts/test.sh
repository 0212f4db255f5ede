#!/usr/bin/env bash
# The whole test suite, from a fresh clone: fetches ONNX Runtime into .ort/ and
# NVIDIA TensorRT-RTX into .trt-rtx/ if needed (scripts/setup-ort.sh,
# scripts/setup-trt-rtx.sh: GB10 engines are built and checked without a GPU),
# then builds and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
bash scripts/setup-ort.sh
bash scripts/setup-trt-rtx.sh
# The NvTensorRTRTX plugin: its registration (and refusal without a GPU) is tested.
bash scripts/setup-trt-rtx-ep.sh
# Headless Chromium for the web page's browser test (run/tests/serve_browser.rs),
# from Debian's registry; CI runs as root.
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq chromium
fi
cargo test --workspace --all-targets
# The GPU code (feature `gpu`) compiles without CUDA: keep it building and lint-clean.
cargo clippy --workspace --all-targets --features gpu -- -D warnings
