/*
 * heart's C ABI over TensorRT 10's C++ runtime (feature `tensorrt-native`).
 *
 * Building a serialized plan from an ONNX graph (the parser, a strongly typed
 * network, one optimization profile) and what running one needs: deserialize
 * it, list its I/O tensors, create an execution context, set input shapes and
 * tensor addresses, enqueue on a CUDA stream. Every call reports failure through its
 * return value; the message of the last failure on the calling thread is
 * heart_trt_last_error(). No C++ exception crosses this boundary.
 */
#ifndef HEART_TRT_SHIM_H
#define HEART_TRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A deserialized engine together with the runtime that owns it. */
typedef struct HeartTrtEngine HeartTrtEngine;
/* An execution context of one engine. */
typedef struct HeartTrtContext HeartTrtContext;

/* getInferLibVersion() of the loaded TensorRT library. */
int32_t heart_trt_version(void);

/* The message of the last failure on this thread ("" if none). Valid until
 * the next failing call on this thread. */
const char* heart_trt_last_error(void);

/* The accepted shapes of one dynamic input of a plan being built. */
typedef struct HeartTrtInputRange {
  /* Input tensor name (the ONNX graph input's). */
  const char* name;
  /* Rank, 0..=8; `min`, `opt` and `max` each hold that many dimensions. */
  int32_t nb_dims;
  const int64_t* min;
  const int64_t* opt;
  const int64_t* max;
} HeartTrtInputRange;

/* Builds a serialized plan for the GPU of this process from the ONNX model at
 * `onnx_path` (external data resolved next to it): nvonnxparser into a
 * strongly typed network (the graph's dtypes decide every precision; TensorRT
 * 11 is always strongly typed), one optimization profile made of `n_ranges`
 * ranges (every dynamic input needs one). On success stores a buffer in
 * `*plan` and its length in `*size` and returns 0; free the buffer with
 * heart_trt_plan_free(). */
int32_t heart_trt_build_plan(const char* onnx_path, const HeartTrtInputRange* ranges, int32_t n_ranges, void** plan,
                             size_t* size);

/* Frees a buffer of heart_trt_build_plan() (NULL is ignored). */
void heart_trt_plan_free(void* plan);

/* Deserializes `size` bytes of a plan file; NULL on failure. */
HeartTrtEngine* heart_trt_engine_deserialize(const void* plan, size_t size);

/* Destroys an engine (NULL is ignored). Its contexts must be destroyed first. */
void heart_trt_engine_destroy(HeartTrtEngine* engine);

/* Number of input and output tensors. */
int32_t heart_trt_engine_num_io(const HeartTrtEngine* engine);

/* Name of I/O tensor `index` (0 <= index < num_io), NULL when out of range.
 * Owned by the engine. */
const char* heart_trt_engine_io_name(const HeartTrtEngine* engine, int32_t index);

/* 1 if `name` is an input, 0 if an output, -1 if the engine has no such tensor. */
int32_t heart_trt_engine_io_is_input(const HeartTrtEngine* engine, const char* name);

/* Creates an execution context; NULL on failure. */
HeartTrtContext* heart_trt_context_create(HeartTrtEngine* engine);

/* Destroys a context (NULL is ignored). */
void heart_trt_context_destroy(HeartTrtContext* context);

/* Sets the shape of a dynamic input (`nb_dims` <= 8). 0 on success. */
int32_t heart_trt_context_set_input_shape(HeartTrtContext* context, const char* name, const int64_t* dims,
                                          int32_t nb_dims);

/* Binds tensor `name` to device memory at `address`. 0 on success. */
int32_t heart_trt_context_set_tensor_address(HeartTrtContext* context, const char* name, void* address);

/* Enqueues one inference on `cuda_stream` (a cudaStream_t / CUstream; NULL is
 * the legacy default stream). Returns when enqueued, not when done. 0 on success. */
int32_t heart_trt_context_enqueue(HeartTrtContext* context, void* cuda_stream);

#ifdef __cplusplus
}
#endif

#endif /* HEART_TRT_SHIM_H */
