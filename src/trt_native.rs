//! Native TensorRT (feature `tensorrt-native`, off by default): runs a
//! serialized TensorRT plan without ONNX Runtime, through the thin C ABI shim
//! `native/trt_shim.{h,cpp}` that the build script compiles against the
//! TensorRT 10 named by `TENSORRT_ROOT`.
//!
//! The route for users who want to drop ONNX Runtime on the GPU: [`build_plan`]
//! compiles a plan from a graph in its TensorRT form (the graphs of a
//! `heart-build --target tensorrt` / `tensorrt-rtx` folder, whose profiles the
//! manifest lists) on the GPU at hand, or plans are the engines `heart-build
//! --target tensorrt` writes under `trt/engines/`. Device memory and streams
//! come from cudarc; this module only binds addresses and enqueues. The shim
//! and this module were compiled against the public TensorRT 10.14, 10.16 and
//! 11.1 headers (no TensorRT library here to link or run them); see
//! `docs/gpu.md` §6.

use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::NonNull;

use cudarc::driver::CudaStream;

#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    missing_docs
)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/trt_shim.rs"));
}

/// Errors of the native TensorRT runtime, with TensorRT's own message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrtError {
    /// Reading the plan file failed.
    #[error("reading TensorRT plan {path}: {source}")]
    Io {
        /// The plan file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TensorRT call failed.
    #[error("TensorRT {call}: {message}")]
    Call {
        /// The shim function.
        call: &'static str,
        /// `heart_trt_last_error()`.
        message: String,
    },
    /// A tensor name contains a NUL byte.
    #[error("tensor name {0:?} contains a NUL byte")]
    Name(String),
}

fn last_error(call: &'static str) -> TrtError {
    // SAFETY: the shim returns a NUL-terminated thread-local string.
    let message = unsafe { CStr::from_ptr(ffi::heart_trt_last_error()) }
        .to_string_lossy()
        .into_owned();
    TrtError::Call { call, message }
}

fn check(call: &'static str, status: i32) -> Result<(), TrtError> {
    if status == 0 { Ok(()) } else { Err(last_error(call)) }
}

fn c_name(name: &str) -> Result<CString, TrtError> {
    CString::new(name).map_err(|_| TrtError::Name(name.to_string()))
}

/// Version of the TensorRT library this process loaded (`10.x.y`).
pub fn version() -> String {
    // SAFETY: no arguments, no state.
    decode_version(unsafe { ffi::heart_trt_version() })
}

fn decode_version(v: i32) -> String {
    format!("{}.{}.{}", v / 10_000, (v / 100) % 100, v % 100)
}

/// The accepted shapes of one dynamic input of a plan (an optimization-profile entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRange<'a> {
    /// Input tensor name.
    pub name: &'a str,
    /// Smallest shape.
    pub min: &'a [i64],
    /// Shape TensorRT tunes for.
    pub opt: &'a [i64],
    /// Largest shape.
    pub max: &'a [i64],
}

/// Builds a serialized plan for this process's GPU from the ONNX graph at
/// `onnx` (external data next to it): TensorRT's ONNX parser, a strongly
/// typed network (the graph's dtypes decide every precision, so FP4/FP8
/// weights stay FP4/FP8), one optimization profile of `ranges` (every dynamic
/// input needs one).
pub fn build_plan(onnx: &Path, ranges: &[InputRange<'_>]) -> Result<Vec<u8>, TrtError> {
    let path = onnx
        .to_str()
        .and_then(|p| CString::new(p).ok())
        .ok_or_else(|| TrtError::Call {
            call: "build_plan",
            message: format!("{} is not a UTF-8 path without NUL bytes", onnx.display()),
        })?;
    let mut names = Vec::with_capacity(ranges.len());
    let mut raw = Vec::with_capacity(ranges.len());
    for r in ranges {
        if r.min.len() != r.max.len() || r.opt.len() != r.max.len() {
            return Err(TrtError::Call {
                call: "build_plan",
                message: format!("input `{}`: min, opt and max have different ranks", r.name),
            });
        }
        names.push(c_name(r.name)?);
        raw.push(ffi::HeartTrtInputRange {
            name: std::ptr::null(),
            nb_dims: i32::try_from(r.max.len()).unwrap_or(i32::MAX),
            min: r.min.as_ptr(),
            opt: r.opt.as_ptr(),
            max: r.max.as_ptr(),
        });
    }
    for (entry, name) in raw.iter_mut().zip(&names) {
        entry.name = name.as_ptr();
    }
    let mut plan: *mut c_void = std::ptr::null_mut();
    let mut size = 0usize;
    let n = i32::try_from(raw.len()).unwrap_or(i32::MAX);
    // SAFETY: every pointer in `raw` points into `names` / `ranges`, alive for the call.
    check("build_plan", unsafe {
        ffi::heart_trt_build_plan(path.as_ptr(), raw.as_ptr(), n, &mut plan, &mut size)
    })?;
    // SAFETY: on success the shim returned a malloc'd buffer of `size` bytes, freed once here.
    let bytes = unsafe { std::slice::from_raw_parts(plan.cast::<u8>(), size) }.to_vec();
    unsafe { ffi::heart_trt_plan_free(plan) };
    Ok(bytes)
}

/// A deserialized engine.
pub struct Engine {
    raw: NonNull<ffi::HeartTrtEngine>,
}

// SAFETY: TensorRT engines may be used from any thread; contexts are not shared.
unsafe impl Send for Engine {}

impl Engine {
    /// Deserializes a plan held in memory.
    pub fn deserialize(plan: &[u8]) -> Result<Self, TrtError> {
        // SAFETY: the pointer and length describe `plan`, which the shim only reads.
        let raw = unsafe { ffi::heart_trt_engine_deserialize(plan.as_ptr().cast(), plan.len()) };
        NonNull::new(raw)
            .map(|raw| Self { raw })
            .ok_or_else(|| last_error("deserialize"))
    }

    /// Reads and deserializes a plan file.
    pub fn from_file(path: &Path) -> Result<Self, TrtError> {
        let plan = std::fs::read(path).map_err(|source| TrtError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::deserialize(&plan)
    }

    /// Names of the engine's inputs and outputs, with `true` for inputs.
    pub fn io_tensors(&self) -> Vec<(String, bool)> {
        // SAFETY: `raw` is a live engine; names are owned by it and copied here.
        unsafe {
            (0..ffi::heart_trt_engine_num_io(self.raw.as_ptr()))
                .filter_map(|i| {
                    let name = ffi::heart_trt_engine_io_name(self.raw.as_ptr(), i);
                    if name.is_null() {
                        return None;
                    }
                    let is_input = ffi::heart_trt_engine_io_is_input(self.raw.as_ptr(), name) == 1;
                    Some((CStr::from_ptr(name).to_string_lossy().into_owned(), is_input))
                })
                .collect()
        }
    }

    /// A new execution context (borrows the engine, which must outlive it).
    pub fn context(&self) -> Result<Context<'_>, TrtError> {
        // SAFETY: `raw` is a live engine.
        let raw = unsafe { ffi::heart_trt_context_create(self.raw.as_ptr()) };
        NonNull::new(raw)
            .map(|raw| Context {
                raw,
                _engine: PhantomData,
            })
            .ok_or_else(|| last_error("create_execution_context"))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: contexts borrow the engine, so none is alive any more.
        unsafe { ffi::heart_trt_engine_destroy(self.raw.as_ptr()) }
    }
}

/// An execution context of an [`Engine`].
pub struct Context<'e> {
    raw: NonNull<ffi::HeartTrtContext>,
    _engine: PhantomData<&'e Engine>,
}

impl Context<'_> {
    /// Sets the shape of dynamic input `name` (within the engine's profile).
    pub fn set_input_shape(&mut self, name: &str, dims: &[i64]) -> Result<(), TrtError> {
        let name = c_name(name)?;
        let nb = i32::try_from(dims.len()).unwrap_or(i32::MAX);
        // SAFETY: live context; `dims` outlives the call, which copies it.
        check("set_input_shape", unsafe {
            ffi::heart_trt_context_set_input_shape(self.raw.as_ptr(), name.as_ptr(), dims.as_ptr(), nb)
        })
    }

    /// Binds tensor `name` to device memory at `address`.
    ///
    /// # Safety
    /// `address` must point to device memory large enough for the tensor's
    /// current shape and stay valid until every enqueued run using it is done.
    pub unsafe fn set_tensor_address(&mut self, name: &str, address: *mut c_void) -> Result<(), TrtError> {
        let name = c_name(name)?;
        // SAFETY: live context; the caller vouches for `address`.
        check("set_tensor_address", unsafe {
            ffi::heart_trt_context_set_tensor_address(self.raw.as_ptr(), name.as_ptr(), address)
        })
    }

    /// Enqueues one run on `stream`; it completes asynchronously.
    ///
    /// # Safety
    /// Every I/O tensor must have a shape and an address set as
    /// [`Context::set_tensor_address`] requires.
    pub unsafe fn enqueue(&mut self, stream: &CudaStream) -> Result<(), TrtError> {
        // SAFETY: live context and a live stream of the caller's context.
        check("enqueue", unsafe {
            ffi::heart_trt_context_enqueue(self.raw.as_ptr(), stream.cu_stream().cast())
        })
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: the context is live and destroyed once.
        unsafe { ffi::heart_trt_context_destroy(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_decode_the_tensorrt_10_encoding() {
        assert_eq!(super::decode_version(101303), "10.13.3");
    }
}
