#!/usr/bin/env bash
# Fetches the ONNX Runtime 1.31.1 shared library (CPU) from the PyPI wheel into
# .ort/ (git-ignored). Idempotent: does nothing when the library is already there.
# heart's binaries find it there without any environment variable. Offline: set
# HEART_WHEELS to a folder holding the wheel (as scripts/gpu-check.sh does).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=1.31.1
lib="$root/.ort/libonnxruntime.so.$version"
if [ -f "$lib" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
py="$(command -v python3 || command -v python)"
source_args=()
if [ -n "${HEART_WHEELS:-}" ]; then
  source_args=(--no-index --find-links "$HEART_WHEELS")
fi
"$py" -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --platform "manylinux_2_28_$(uname -m)" "${source_args[@]}" \
  "onnxruntime==$version" -d "$tmp"
mkdir -p "$root/.ort"
"$py" - "$tmp" "$root/.ort" "$version" <<'PY'
import glob, sys, zipfile
tmp, dest, version = sys.argv[1:]
wheel = glob.glob(f"{tmp}/onnxruntime-{version}-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = f"onnxruntime/capi/libonnxruntime.so.{version}"
    with z.open(name) as src, open(f"{dest}/libonnxruntime.so.{version}.part", "wb") as out:
        out.write(src.read())
PY
mv "$lib.part" "$lib"
echo "ONNX Runtime $version installed at $lib"
