"""Builds TensorRT-RTX engines ahead of time (no GPU needed) for heart-build.

TensorRT-RTX publishes no C++ headers on the package index; its Python
builder is the header-free interface, so `heart-build --target tensorrt-rtx`
runs this script with the interpreter of the environment that
`scripts/setup-trt-rtx.sh` installs.

Protocol: one JSON request on stdin, one JSON reply on stdout (nothing else:
TensorRT's own log goes to stderr); exit status 0 when every engine was built,
1 otherwise (the reply's `error` says which graph failed and why, with the
parser's own messages; the builder's are in the log).

Request:
  {"arch": "sm121",
   "graphs": [{"onnx": "/abs/backbone.onnx", "engine": "/abs/trt/backbone.engine",
               "profile": {"embeds": {"min": [1, 1, 64], "opt": [2, 1, 64], "max": [2, 64, 64]}, ...}}]}
Every dynamic input of a graph must have a profile entry (TensorRT refuses to
build otherwise); fixed inputs may be left out.

Reply:
  {"tensorrt_rtx_version": "1.7.1.116", "arch": "sm121",
   "graphs": [{"onnx": ..., "engine": ..., "bytes": N, "seconds": S,
               "inputs": [{"name": "embeds", "dtype": "FLOAT", "shape": [-1, -1, 64]}, ...],
               "outputs": [...]}]}
Shapes are the network's, -1 for a dimension fixed only by the profile.
"""

import json
import os
import sys
import time


# TensorRT's logger writes to the process's stdout. The reply gets a private
# copy of the original stdout; fd 1 then points at stderr, so the builder's log
# (warnings, errors) ends up on stderr, where heart-build shows its tail.
REPLY = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


def reply(obj, status):
    json.dump(obj, REPLY)
    REPLY.write("\n")
    REPLY.flush()
    sys.exit(status)


def fail(message):
    reply({"error": message}, 1)


def tensors(items):
    return [
        {"name": t.name, "dtype": t.dtype.name, "shape": [int(d) for d in t.shape]}
        for t in items
    ]


def build_one(trt, logger, capability, job):
    onnx, engine = job["onnx"], job["engine"]
    start = time.monotonic()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"the ONNX parser rejected it: {errors}")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(capability, 0)
    ranges = job.get("profile", {})
    unknown = sorted(set(ranges) - {t.name for t in inputs})
    if unknown:
        raise RuntimeError(f"the profile names inputs the graph does not have: {', '.join(unknown)}")
    profile = builder.create_optimization_profile()
    for t in inputs:
        if -1 not in tuple(t.shape):
            continue
        if t.name not in ranges:
            raise RuntimeError(f"dynamic input `{t.name}` {tuple(t.shape)} has no profile range")
        r = ranges[t.name]
        profile.set_shape(t.name, r["min"], r["opt"], r["max"])
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT-RTX built no engine (its log says why)")
    part = engine + ".part"
    with open(part, "wb") as out:
        out.write(plan)
    os.replace(part, engine)
    return {
        "onnx": onnx,
        "engine": engine,
        "bytes": os.path.getsize(engine),
        "seconds": round(time.monotonic() - start, 3),
        "inputs": tensors(inputs),
        "outputs": tensors(outputs),
    }


def main():
    try:
        request = json.load(sys.stdin)
        arch = request["arch"]
        graphs = request["graphs"]
    except (ValueError, KeyError, TypeError) as e:
        fail(f"bad request on stdin: {e!r} (expected {{\"arch\": ..., \"graphs\": [...]}})")
    try:
        import tensorrt_rtx as trt
    except ImportError as e:
        fail(f"cannot import tensorrt_rtx ({e}); run scripts/setup-trt-rtx.sh")
    name = arch.upper()
    if name not in trt.ComputeCapability.__members__ or not name.startswith("SM"):
        known = ", ".join(m.lower() for m in trt.ComputeCapability.__members__ if m.startswith("SM"))
        fail(f"TensorRT-RTX {trt.__version__} cannot build for `{arch}` (it knows {known})")
    capability = trt.ComputeCapability.__members__[name]
    logger = trt.Logger(trt.Logger.WARNING)
    built = []
    for job in graphs:
        try:
            built.append(build_one(trt, logger, capability, job))
        except (RuntimeError, KeyError, TypeError) as e:
            fail(f"{job.get('onnx', '?')}: {e}")
    reply({"tensorrt_rtx_version": trt.__version__, "arch": arch, "graphs": built}, 0)


if __name__ == "__main__":
    main()
