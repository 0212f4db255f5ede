#!/usr/bin/env bash
# One command for whoever has an NVIDIA GPU (written for the GB10 / DGX Spark;
# any GPU TensorRT-RTX supports: compute capability 8.6, 8.9, 12.x): checks
# heart's TensorRT-RTX path end to end and prints one line per step,
#   PASS|FAIL <step> <figure or reason>
# then exits non-zero if any step failed. Needs no network: it takes prebuilt
# heart binaries and the pip wheels from folders.
#
#   bash scripts/gpu-check.sh --bin DIR --wheels DIR [--work DIR]
#
#   --bin     heart-run, heart-build, heart-conform built for this machine with
#             the device-resident loop (`cargo build --release --features gpu
#             -p heart-run -p heart-build -p heart-conform`)
#   --wheels  onnxruntime 1.31.1, onnxruntime-ep-nv-tensorrt-rtx-cu13 0.5.0 and
#             tensorrt-rtx-cu13 1.7.1 wheels for this machine (`pip download
#             --no-deps` them elsewhere; the last one only for the AOT builds)
#   --work    scratch folder (default: a temporary one, removed at the end)
#
# Steps (docs/gpu.md says what each proves): doctor, AOT builds of the tiny-a
# fixture at fp32 and fp16 for this GPU's architecture, heart-conform on the
# GPU backend at both, the device-resident loop's greedy codes == the CPU's,
# greedy speculative == plain, heart-run bench on a synthesized small model at
# fp16 and fp4 with CUDA graphs on and off. Budget: under 10 minutes; every
# step runs under `timeout`. Run from a fresh shell: heart-run finds the
# plugin's libraries itself (no LD_LIBRARY_PATH).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="" wheels="" work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$(cd "$2" && pwd)"; shift 2 ;;
    --wheels) wheels="$(cd "$2" && pwd)"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "usage: $0 --bin DIR --wheels DIR [--work DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ] || [ -z "$wheels" ]; then
  echo "usage: $0 --bin DIR --wheels DIR [--work DIR]" >&2
  exit 2
fi
for b in heart-run heart-build heart-conform; do
  [ -x "$bin/$b" ] || { echo "FAIL setup $bin/$b missing" ; exit 1; }
done
if [ -z "$work" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
cd "$root"
failed=0
pass() { echo "PASS $1 $2"; }
fail() { echo "FAIL $1 $2"; failed=1; }
# Runs "$@" under a time limit, output to $work/<step>.log; true on success.
run() {
  local step="$1" limit="$2"; shift 2
  timeout "$limit" "$@" >"$work/$step.log" 2>&1
}
last_line() { tail -n 1 "$work/$1.log" | tr -s ' ' | cut -c1-200; }
seconds() { python3 -c "import time; print(f'{time.time()-$1:.1f}')"; }
now() { python3 -c "import time; print(time.time())"; }

# 0. Installs from the wheel folder (no network).
export HEART_WHEELS="$wheels" PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels"
if run setup 300 bash -c "bash scripts/setup-ort.sh && bash scripts/setup-trt-rtx-ep.sh"; then
  pass setup "ONNX Runtime in .ort/, NvTensorRTRTX plugin in .trt-rtx-ep/"
else
  fail setup "$(last_line setup)"
fi
# heart-run loads the plugin's libraries by path; nothing goes on LD_LIBRARY_PATH.
unset LD_LIBRARY_PATH
have_builder=0
if [ -f scripts/setup-trt-rtx.sh ] && "$bin/heart-build" --help | grep -q tensorrt-rtx; then
  if run setup-builder 300 bash scripts/setup-trt-rtx.sh; then
    have_builder=1
  else
    fail setup-builder "$(last_line setup-builder)"
  fi
fi

# 1. doctor: the plugin registers and reports this GPU.
arch=""
if run doctor 60 "$bin/heart-run" doctor --json; then
  read -r ok arch figure < <(python3 - "$work/doctor.log" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
g, t = r["gpu"], r["tensorrt_rtx"]
ok = bool(g) and t["loads"] and len(t["devices"]) > 0
arch = "sm" + g["compute_capability"].replace(".", "") if g else "-"
name = g["name"].replace(" ", "_") if g else "no_gpu"
print(int(ok), arch, f"{name} cc={g['compute_capability'] if g else '-'} TensorRT-RTX={t['tensorrt_rtx_version']} "
      f"devices={len(t['devices'])} driver={r['driver']['status'].replace(' ', '_')} pick={r['backend']['backend']}")
PY
  )
  [ "$arch" = "-" ] && arch=""
  if [ "$ok" = 1 ]; then pass doctor "$figure"; else fail doctor "$figure"; fi
else
  fail doctor "$(last_line doctor)"
fi

fixture=tests/fixtures/tiny-a
build_rtx() { # step out precision [extra heart-build flags]
  local step="$1" out="$2" precision="$3"; shift 3
  if [ "$have_builder" != 1 ] || [ -z "$arch" ]; then
    fail "$step" "needs heart-build --target tensorrt-rtx (issue #13), its TensorRT-RTX install and the doctor step"
    return 1
  fi
  local t0; t0="$(now)"
  if run "$step" 240 "$bin/heart-build" -q --mula "$fixture/heartmula" --codec "$fixture/heartcodec" \
      --precision "$precision" --target tensorrt-rtx --gpu-arch "$arch" --out "$out" "$@"; then
    pass "$step" "$(du -sb "$out/trt" | cut -f1) engine bytes for $arch in $(seconds "$t0") s"
  else
    fail "$step" "$(last_line "$step")"
    return 1
  fi
}

# 2./3. AOT builds of the fixture and conformance on the GPU backend.
for p in fp32 fp16; do
  if build_rtx "aot-$p" "$work/tiny-$p" "$p"; then
    if run "conform-$p" 120 "$bin/heart-conform" "$fixture" --engines "$work/tiny-$p" --backend tensorrt-rtx; then
      pass "conform-$p" "$(last_line "conform-$p")"
    else
      fail "conform-$p" "$(grep -m1 '^FAIL' "$work/conform-$p.log" || last_line "conform-$p")"
    fi
  else
    fail "conform-$p" "no engines"
  fi
done

# 4. The device-resident loop (caches on the GPU, fixed-address bindings,
#    CUDA graphs) samples the CPU's greedy codes from the same fp32 engines.
if [ -d "$work/tiny-fp32/trt" ]; then
  args=(--engines "$work/tiny-fp32" --tags piano --lyrics "[verse] la" --duration 4 --topk 1 --seed 3 --json -q)
  if run loop-gpu 120 "$bin/heart-run" "${args[@]}" --backend tensorrt-rtx --out "$work/loop-gpu.wav" \
     && run loop-cpu 120 "$bin/heart-run" "${args[@]}" --backend cpu --out "$work/loop-cpu.wav"; then
    read -r ok figure < <(python3 - "$work/loop-gpu.log" "$work/loop-cpu.log" <<'PY'
import json, sys
def summary(path):
    text = open(path).read()
    return json.loads(text[text.index("{"):])
g, c = summary(sys.argv[1]), summary(sys.argv[2])
ok = g["lm_loop"] == "device" and g["codes_sha256"] == c["codes_sha256"] and g["frames"] == c["frames"]
print(int(ok), f"loop={g['lm_loop']} frames={g['frames']}/{c['frames']} codes={g['codes_sha256']}/{c['codes_sha256']} "
      f"lm_frames_per_s={g['lm_frames_per_s']:.1f}")
PY
    )
    if [ "$ok" = 1 ]; then pass device-loop "$figure"; else fail device-loop "$figure"; fi
  else
    fail device-loop "$(last_line loop-gpu) $(last_line loop-cpu)"
  fi
else
  fail device-loop "no fp32 engines"
fi

# 5. Greedy (top-k 1) speculative decoding gives the plain result.
if build_rtx aot-draft "$work/tiny-draft" fp16 --draft-precision fp16; then
  args=(--engines "$work/tiny-draft" --backend tensorrt-rtx --tags piano --lyrics "[verse] la" --duration 4
        --topk 1 --seed 3 -q)
  if run spec-plain 120 "$bin/heart-run" "${args[@]}" --out "$work/plain.wav" \
     && run spec-draft 120 "$bin/heart-run" "${args[@]}" --speculate 4 --out "$work/spec.wav"; then
    a="$(sha256sum < "$work/plain.wav" | cut -c1-16)" b="$(sha256sum < "$work/spec.wav" | cut -c1-16)"
    if [ "$a" = "$b" ]; then pass speculative "identical WAV ($a)"; else fail speculative "plain $a != speculative $b"; fi
  else
    fail speculative "$(last_line spec-plain) $(last_line spec-draft)"
  fi
else
  fail speculative "no engines"
fi

# 6. Bench on a synthesized small model at fp16 and fp4, CUDA graphs on and off.
if [ "$have_builder" = 1 ] && [ -n "$arch" ] && run synth 120 "$bin/heart-build" synth --size small --out "$work/small"; then
  for p in fp16 fp4; do
    out="$work/small-$p"
    if run "aot-small-$p" 300 "$bin/heart-build" -q --mula "$work/small/HeartMuLa-oss-3B" \
        --codec "$work/small/HeartCodec-oss" --precision "$p" --target tensorrt-rtx --gpu-arch "$arch" --out "$out" \
       && run "bench-$p" 180 "$bin/heart-run" bench --engines "$out" --backend tensorrt-rtx --json --frames 5 \
        --positions 0,512 --prompt-tokens 64 --no-codec --stream-mib 64 --peak-rounds 100000 \
       && run "bench-$p-nograph" 180 "$bin/heart-run" bench --engines "$out" --backend tensorrt-rtx --json \
        --frames 5 --positions 0,512 --prompt-tokens 64 --no-codec --stream-mib 64 --peak-rounds 100000 \
        --cuda-graphs off; then
      figure="$(python3 - "$work/bench-$p.log" "$work/bench-$p-nograph.log" <<'PY'
import json, sys
def fps(path):
    text = open(path).read()
    r = json.loads(text[text.index("{"):])
    rows = {row["name"]: row for row in r["rows"]}
    return [f"{k.split('@')[-1].strip()}={v['median']:.1f}" for k, v in rows.items() if k.startswith("lm frames/s")]
print("frames/s graphs-on " + " ".join(fps(sys.argv[1])) + " graphs-off " + " ".join(fps(sys.argv[2])))
PY
      )"
      pass "bench-$p" "$figure"
    else
      fail "bench-$p" "$(last_line "aot-small-$p") $(last_line "bench-$p" 2>/dev/null)"
    fi
  done
else
  fail bench-fp16 "no small model (needs heart-build --target tensorrt-rtx and the doctor step)"
  fail bench-fp4 "no small model"
fi

exit "$failed"
