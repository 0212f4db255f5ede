// heart's C ABI over TensorRT 10's C++ runtime: see trt_shim.h.
//
// Written against TensorRT 10's documented API (IRuntime::deserializeCudaEngine,
// ICudaEngine::getNbIOTensors / getIOTensorName / getTensorIOMode /
// createExecutionContext, IExecutionContext::setInputShape / setTensorAddress /
// enqueueV3). TensorRT 10 objects are released with `delete`.

#include "trt_shim.h"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <exception>
#include <memory>
#include <string>

namespace {

thread_local std::string last_error;

void fail(const char* what) { last_error = what != nullptr ? what : "unknown TensorRT error"; }

// Keeps TensorRT's errors for heart_trt_last_error(); drops everything milder.
class ErrorLogger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) {
      try {
        fail(msg);
      } catch (...) {
        // Out of memory while storing the message: nothing left to report with.
      }
    }
  }
};

ErrorLogger& logger() {
  static ErrorLogger instance;
  return instance;
}

}  // namespace

// Members are destroyed in reverse order: the engine before its runtime.
struct HeartTrtEngine {
  std::unique_ptr<nvinfer1::IRuntime> runtime;
  std::unique_ptr<nvinfer1::ICudaEngine> engine;
};

struct HeartTrtContext {
  std::unique_ptr<nvinfer1::IExecutionContext> context;
};

extern "C" {

int32_t heart_trt_version(void) { return getInferLibVersion(); }

const char* heart_trt_last_error(void) { return last_error.c_str(); }

HeartTrtEngine* heart_trt_engine_deserialize(const void* plan, size_t size) {
  last_error.clear();
  if (plan == nullptr || size == 0) {
    fail("empty plan");
    return nullptr;
  }
  try {
    auto out = std::make_unique<HeartTrtEngine>();
    out->runtime.reset(nvinfer1::createInferRuntime(logger()));
    if (!out->runtime) {
      fail("createInferRuntime failed");
      return nullptr;
    }
    out->engine.reset(out->runtime->deserializeCudaEngine(plan, size));
    if (!out->engine) {
      if (last_error.empty()) {
        fail("deserializeCudaEngine failed (a plan of another TensorRT version or GPU?)");
      }
      return nullptr;
    }
    return out.release();
  } catch (const std::exception& e) {
    fail(e.what());
    return nullptr;
  }
}

void heart_trt_engine_destroy(HeartTrtEngine* engine) { delete engine; }

int32_t heart_trt_engine_num_io(const HeartTrtEngine* engine) {
  return engine != nullptr ? engine->engine->getNbIOTensors() : 0;
}

const char* heart_trt_engine_io_name(const HeartTrtEngine* engine, int32_t index) {
  if (engine == nullptr || index < 0 || index >= engine->engine->getNbIOTensors()) {
    return nullptr;
  }
  return engine->engine->getIOTensorName(index);
}

int32_t heart_trt_engine_io_is_input(const HeartTrtEngine* engine, const char* name) {
  if (engine == nullptr || name == nullptr) {
    return -1;
  }
  switch (engine->engine->getTensorIOMode(name)) {
    case nvinfer1::TensorIOMode::kINPUT:
      return 1;
    case nvinfer1::TensorIOMode::kOUTPUT:
      return 0;
    default:
      return -1;
  }
}

HeartTrtContext* heart_trt_context_create(HeartTrtEngine* engine) {
  last_error.clear();
  if (engine == nullptr) {
    fail("no engine");
    return nullptr;
  }
  try {
    auto out = std::make_unique<HeartTrtContext>();
    out->context.reset(engine->engine->createExecutionContext());
    if (!out->context) {
      if (last_error.empty()) {
        fail("createExecutionContext failed (out of device memory?)");
      }
      return nullptr;
    }
    return out.release();
  } catch (const std::exception& e) {
    fail(e.what());
    return nullptr;
  }
}

void heart_trt_context_destroy(HeartTrtContext* context) { delete context; }

int32_t heart_trt_context_set_input_shape(HeartTrtContext* context, const char* name, const int64_t* dims,
                                          int32_t nb_dims) {
  last_error.clear();
  if (context == nullptr || name == nullptr || nb_dims < 0 || nb_dims > nvinfer1::Dims::MAX_DIMS ||
      (nb_dims > 0 && dims == nullptr)) {
    fail("invalid arguments to set_input_shape");
    return -1;
  }
  nvinfer1::Dims shape{};
  shape.nbDims = nb_dims;
  for (int32_t i = 0; i < nb_dims; ++i) {
    shape.d[i] = dims[i];
  }
  if (!context->context->setInputShape(name, shape)) {
    if (last_error.empty()) {
      fail("setInputShape rejected the shape (outside the engine's optimization profile?)");
    }
    return -1;
  }
  return 0;
}

int32_t heart_trt_context_set_tensor_address(HeartTrtContext* context, const char* name, void* address) {
  last_error.clear();
  if (context == nullptr || name == nullptr) {
    fail("invalid arguments to set_tensor_address");
    return -1;
  }
  if (!context->context->setTensorAddress(name, address)) {
    if (last_error.empty()) {
      fail("setTensorAddress failed (unknown tensor name?)");
    }
    return -1;
  }
  return 0;
}

int32_t heart_trt_context_enqueue(HeartTrtContext* context, void* cuda_stream) {
  last_error.clear();
  if (context == nullptr) {
    fail("no context");
    return -1;
  }
  if (!context->context->enqueueV3(static_cast<cudaStream_t>(cuda_stream))) {
    if (last_error.empty()) {
      fail("enqueueV3 failed (a shape or address not set?)");
    }
    return -1;
  }
  return 0;
}

}  // extern "C"
