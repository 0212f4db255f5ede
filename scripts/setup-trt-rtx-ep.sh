#!/usr/bin/env bash
# Installs ONNX Runtime's NvTensorRTRTX plugin execution provider (PyPI wheel
# `onnxruntime-ep-nv-tensorrt-rtx-cu13` 0.5.0: the plugin library plus the
# TensorRT-RTX 1.7.1 runtime and libcudart.so.13 it bundles) into .trt-rtx-ep/
# (git-ignored), where `--backend tensorrt-rtx` and `heart-run doctor` find it.
# Idempotent: does nothing when the install is complete.
#
# The wheel ships only versioned names (libtensorrt_rtx.so.1.7.1, ...); the
# `.so.<major>` and `.so` links are made here, as the wheel's Python
# __init__.py does at import. heart-run loads the closure by path itself
# (backend/src/rtx_libs.rs: the links, else the versioned files), so nothing
# goes on LD_LIBRARY_PATH. The driver libraries the plugin NEEDS (libcuda.so.1,
# libnvidia-ml.so.1) come from the NVIDIA driver, not from the wheel.
#
# Offline (a GPU machine without network): pass a folder holding the wheel,
# `bash scripts/setup-trt-rtx-ep.sh --wheels DIR` or HEART_WHEELS=DIR.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=0.5.0
package=onnxruntime-ep-nv-tensorrt-rtx-cu13
dest="$root/.trt-rtx-ep"
wheels="${HEART_WHEELS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    *) echo "usage: $0 [--wheels DIR]" >&2; exit 2 ;;
  esac
done
if [ -f "$dest/VERSION" ] && [ "$(cat "$dest/VERSION")" = "$version" ]; then
  exit 0
fi
case "$(uname -m)" in
  x86_64) platform=manylinux_2_28_x86_64 ;;
  aarch64) platform=manylinux_2_35_aarch64 ;;
  *) echo "setup-trt-rtx-ep.sh: no $package wheel for $(uname -m)" >&2; exit 1 ;;
esac
py="$(command -v python3 || command -v python)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp" "$dest.part"' EXIT
if [ -n "$wheels" ]; then
  source_args=(--no-index --find-links "$wheels")
else
  source_args=()
fi
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform "$platform" "${source_args[@]}" "$package==$version" -d "$tmp"
rm -rf "$dest.part"
mkdir -p "$dest.part"
"$py" - "$tmp" "$dest.part" <<'PY'
import glob, os, re, sys, zipfile
tmp, dest = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = os.path.basename(info.filename)
        if ".so" in name or name == "_version.py":
            with z.open(info) as src, open(os.path.join(dest, name), "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
# soname (libx.so.1) and bare (libx.so) links to every versioned library
for path in glob.glob(f"{dest}/*.so.*"):
    real = os.path.basename(path)
    m = re.match(r"^(.*\.so)\.(\d+)\.", real)
    if not m:
        continue
    for link in (f"{m.group(1)}.{m.group(2)}", m.group(1)):
        os.symlink(real, os.path.join(dest, link))
PY
echo "$version" > "$dest.part/VERSION"
rm -rf "$dest"
mv "$dest.part" "$dest"
echo "ONNX Runtime NvTensorRTRTX plugin $version installed at $dest"
