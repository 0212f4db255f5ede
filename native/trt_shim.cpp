// heart's C ABI over TensorRT 10's C++ builder, ONNX parser and runtime: see
// trt_shim.h.
//
// Written against TensorRT 10's documented API (IBuilder::createNetworkV2 /
// createOptimizationProfile / buildSerializedNetwork, nvonnxparser::IParser::
// parseFromFile, IRuntime::deserializeCudaEngine,
// ICudaEngine::getNbIOTensors / getIOTensorName / getTensorIOMode /
// createExecutionContext, IExecutionContext::setInputShape / setTensorAddress /
// enqueueV3). TensorRT 10 objects are released with `delete`.

#include "trt_shim.h"

#include <NvInfer.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>
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

int32_t heart_trt_build_plan(const char* onnx_path, const HeartTrtInputRange* ranges, int32_t n_ranges, void** plan,
                             size_t* size) {
  last_error.clear();
  if (onnx_path == nullptr || plan == nullptr || size == nullptr || n_ranges < 0 ||
      (n_ranges > 0 && ranges == nullptr)) {
    fail("invalid arguments to build_plan");
    return -1;
  }
  try {
    std::unique_ptr<nvinfer1::IBuilder> builder{nvinfer1::createInferBuilder(logger())};
    if (!builder) {
      fail("createInferBuilder failed");
      return -1;
    }
#if NV_TENSORRT_MAJOR >= 11
    const uint32_t flags = 0;  // strongly typed is the only mode
#else
    const uint32_t flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
#endif
    std::unique_ptr<nvinfer1::INetworkDefinition> network{builder->createNetworkV2(flags)};
    std::unique_ptr<nvonnxparser::IParser> parser{
        network ? nvonnxparser::createParser(*network, logger()) : nullptr};
    if (!parser) {
      fail("creating the network or the ONNX parser failed");
      return -1;
    }
    if (!parser->parseFromFile(onnx_path, static_cast<int32_t>(nvinfer1::ILogger::Severity::kWARNING))) {
      std::string message = std::string("the ONNX parser rejected ") + onnx_path + ":";
      for (int32_t i = 0; i < parser->getNbErrors(); ++i) {
        message += " ";
        message += parser->getError(i)->desc();
      }
      fail(message.c_str());
      return -1;
    }
    std::unique_ptr<nvinfer1::IBuilderConfig> config{builder->createBuilderConfig()};
    nvinfer1::IOptimizationProfile* profile = builder->createOptimizationProfile();
    if (!config || profile == nullptr) {
      fail("creating the builder config or the optimization profile failed");
      return -1;
    }
    for (int32_t r = 0; r < n_ranges; ++r) {
      const HeartTrtInputRange& range = ranges[r];
      if (range.name == nullptr || range.nb_dims < 0 || range.nb_dims > nvinfer1::Dims::MAX_DIMS ||
          (range.nb_dims > 0 && (range.min == nullptr || range.opt == nullptr || range.max == nullptr))) {
        fail("invalid input range");
        return -1;
      }
      const int64_t* shapes[3] = {range.min, range.opt, range.max};
      const nvinfer1::OptProfileSelector selectors[3] = {
          nvinfer1::OptProfileSelector::kMIN, nvinfer1::OptProfileSelector::kOPT, nvinfer1::OptProfileSelector::kMAX};
      for (int32_t k = 0; k < 3; ++k) {
        nvinfer1::Dims dims{};
        dims.nbDims = range.nb_dims;
        for (int32_t i = 0; i < range.nb_dims; ++i) {
          dims.d[i] = shapes[k][i];
        }
        if (!profile->setDimensions(range.name, selectors[k], dims)) {
          fail((std::string("the optimization profile rejected the range of ") + range.name).c_str());
          return -1;
        }
      }
    }
    if (config->addOptimizationProfile(profile) < 0) {
      fail("the optimization profile is invalid (min <= opt <= max for every input?)");
      return -1;
    }
    std::unique_ptr<nvinfer1::IHostMemory> built{builder->buildSerializedNetwork(*network, *config)};
    if (!built || built->size() == 0) {
      if (last_error.empty()) {
        fail("buildSerializedNetwork produced no plan");
      }
      return -1;
    }
    void* out = std::malloc(built->size());
    if (out == nullptr) {
      fail("out of host memory for the plan");
      return -1;
    }
    std::memcpy(out, built->data(), built->size());
    *plan = out;
    *size = built->size();
    return 0;
  } catch (const std::exception& e) {
    fail(e.what());
    return -1;
  }
}

void heart_trt_plan_free(void* plan) { std::free(plan); }

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
