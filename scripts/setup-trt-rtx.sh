#!/usr/bin/env bash
# Installs NVIDIA TensorRT-RTX 1.7.1 (its builder, ONNX parser and Python
# bindings, from the PyPI wheel `tensorrt-rtx-cu13`) into .trt-rtx/ (git-ignored)
# for `heart-build --target tensorrt-rtx`, which builds GPU engines ahead of time
# on any machine, GPU or not. Idempotent: does nothing when the install is there.
#
# Layout: .trt-rtx/site-packages (pip --target) and .trt-rtx/python, the path of
# the interpreter it was installed for (the bindings are built per Python
# version). heart-build finds the folder through --trt-rtx, HEART_TRT_RTX, or
# .trt-rtx/ in the current directory, above the executable, or in this tree.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=1.7.1
dest="$root/.trt-rtx"
py="$(command -v python3 || command -v python)"
if [ -f "$dest/python" ] && PYTHONPATH="$dest/site-packages" "$(cat "$dest/python")" -c \
  "import tensorrt_rtx, sys; sys.exit(0 if tensorrt_rtx.__version__.startswith('$version.') else 1)" 2>/dev/null; then
  exit 0
fi
tmp="$dest.part"
rm -rf "$tmp"
"$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-compile \
  --target "$tmp/site-packages" "tensorrt-rtx-cu13==$version.*"
"$py" -c 'import sys; print(sys.executable)' > "$tmp/python"
PYTHONPATH="$tmp/site-packages" "$py" -c "import tensorrt_rtx; print('TensorRT-RTX', tensorrt_rtx.__version__, 'installed at $dest')"
rm -rf "$dest"
mv "$tmp" "$dest"
