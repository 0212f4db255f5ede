//! A CUDA stream heart creates and hands to the execution provider
//! (`user_compute_stream`), so the copies heart issues around a session run
//! (inputs up, KV-cache appends, logits down) are ordered with the
//! provider's own kernels on one stream: no race, no device-wide sync.
//! Feature `gpu`; compiled and linted without CUDA, run only on a GPU.
//!
//! The driver is reached through our own `dlopen` of `libcuda.so.1` after
//! [`crate::driver::probe`] accepted it (CUDA 13, every entry point present),
//! never through cudarc (which panics on older drivers).

use std::ffi::{c_int, c_uint, c_void};

use crate::device::Probe;
use crate::driver::{DRIVER_LIBRARY, probe};

/// A driver call that failed.
#[derive(Debug, thiserror::Error)]
#[error("CUDA: {call} failed: {reason}")]
pub struct StreamError {
    /// The driver entry point.
    pub call: &'static str,
    /// Its error code or the probe's reason.
    pub reason: String,
}

type Res = c_int;
type Ptr = u64;

/// `CUDA_MEMCPY2D` (cuda.h).
#[repr(C)]
struct Memcpy2d {
    src_x_in_bytes: usize,
    src_y: usize,
    src_memory_type: c_uint,
    src_host: *const c_void,
    src_device: Ptr,
    src_array: *mut c_void,
    src_pitch: usize,
    dst_x_in_bytes: usize,
    dst_y: usize,
    dst_memory_type: c_uint,
    dst_host: *mut c_void,
    dst_device: Ptr,
    dst_array: *mut c_void,
    dst_pitch: usize,
    width_in_bytes: usize,
    height: usize,
}

const MEMORYTYPE_DEVICE: c_uint = 2;
const STREAM_NON_BLOCKING: c_uint = 1;

struct Api {
    set_current: unsafe extern "C" fn(*mut c_void) -> Res,
    memcpy_2d_async: unsafe extern "C" fn(*const Memcpy2d, *mut c_void) -> Res,
    memcpy_htod_async: unsafe extern "C" fn(Ptr, *const c_void, usize, *mut c_void) -> Res,
    memcpy_dtoh_async: unsafe extern "C" fn(*mut c_void, Ptr, usize, *mut c_void) -> Res,
    memset_d8_async: unsafe extern "C" fn(Ptr, u8, usize, *mut c_void) -> Res,
    stream_synchronize: unsafe extern "C" fn(*mut c_void) -> Res,
    stream_destroy: unsafe extern "C" fn(*mut c_void) -> Res,
}

/// A non-blocking stream on one device's primary context.
pub struct CudaStream {
    _lib: libloading::Library,
    api: Api,
    context: *mut c_void,
    stream: *mut c_void,
}

fn check(call: &'static str, code: Res) -> Result<(), StreamError> {
    if code == 0 {
        Ok(())
    } else {
        Err(StreamError {
            call,
            reason: format!("CUDA error {code}"),
        })
    }
}

impl CudaStream {
    /// A new stream on device `ordinal`, its primary context made current on
    /// this thread (the one ONNX Runtime's providers use).
    pub fn create(ordinal: i32) -> Result<Self, StreamError> {
        match probe(ordinal) {
            Probe::Found(_) => {}
            p => {
                return Err(StreamError {
                    call: "driver probe",
                    reason: p.reason(),
                });
            }
        }
        // SAFETY: the probe loaded this library and resolved its entry points
        // already; the signatures below are cuda.h's (v2 ABI names).
        unsafe {
            let lib = libloading::Library::new(DRIVER_LIBRARY).map_err(|e| StreamError {
                call: "dlopen",
                reason: e.to_string(),
            })?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name).map_err(|_| StreamError {
                        call: "dlsym",
                        reason: String::from_utf8_lossy($name).into_owned(),
                    })?
                };
            }
            let init: unsafe extern "C" fn(c_uint) -> Res = sym!(b"cuInit\0");
            let device_get: unsafe extern "C" fn(*mut c_int, c_int) -> Res = sym!(b"cuDeviceGet\0");
            let retain: unsafe extern "C" fn(*mut *mut c_void, c_int) -> Res = sym!(b"cuDevicePrimaryCtxRetain\0");
            let stream_create: unsafe extern "C" fn(*mut *mut c_void, c_uint) -> Res = sym!(b"cuStreamCreate\0");
            let api = Api {
                set_current: sym!(b"cuCtxSetCurrent\0"),
                memcpy_2d_async: sym!(b"cuMemcpy2DAsync_v2\0"),
                memcpy_htod_async: sym!(b"cuMemcpyHtoDAsync_v2\0"),
                memcpy_dtoh_async: sym!(b"cuMemcpyDtoHAsync_v2\0"),
                memset_d8_async: sym!(b"cuMemsetD8Async\0"),
                stream_synchronize: sym!(b"cuStreamSynchronize\0"),
                stream_destroy: sym!(b"cuStreamDestroy_v2\0"),
            };
            check("cuInit", init(0))?;
            let mut dev = 0;
            check("cuDeviceGet", device_get(&mut dev, ordinal))?;
            let mut ctx = std::ptr::null_mut();
            check("cuDevicePrimaryCtxRetain", retain(&mut ctx, dev))?;
            check("cuCtxSetCurrent", (api.set_current)(ctx))?;
            let mut stream = std::ptr::null_mut();
            check("cuStreamCreate", stream_create(&mut stream, STREAM_NON_BLOCKING))?;
            Ok(Self {
                _lib: lib,
                api,
                context: ctx,
                stream,
            })
        }
    }

    /// Makes the stream's context current on the calling thread: the loop
    /// may step on another thread than the one that created the stream, and
    /// driver calls act on the thread's current context.
    fn current(&self) -> Result<(), StreamError> {
        // SAFETY: the primary context retained in `create`, alive while `self` is.
        check("cuCtxSetCurrent", unsafe { (self.api.set_current)(self.context) })
    }

    /// The raw `CUstream`, for the providers' `user_compute_stream` option.
    pub fn handle(&self) -> usize {
        self.stream as usize
    }

    /// Enqueues a strided device-to-device copy: `height` rows of `width`
    /// bytes from `src` (row pitch `src_pitch`) to `dst` (row pitch `dst_pitch`).
    ///
    /// # Safety
    /// `dst` and `src` must be device allocations of the stream's context
    /// holding every addressed byte until the stream has passed the copy.
    pub unsafe fn copy_2d(
        &self,
        (dst, dst_pitch): (Ptr, usize),
        (src, src_pitch): (Ptr, usize),
        width: usize,
        height: usize,
    ) -> Result<(), StreamError> {
        let p = Memcpy2d {
            src_x_in_bytes: 0,
            src_y: 0,
            src_memory_type: MEMORYTYPE_DEVICE,
            src_host: std::ptr::null(),
            src_device: src,
            src_array: std::ptr::null_mut(),
            src_pitch,
            dst_x_in_bytes: 0,
            dst_y: 0,
            dst_memory_type: MEMORYTYPE_DEVICE,
            dst_host: std::ptr::null_mut(),
            dst_device: dst,
            dst_array: std::ptr::null_mut(),
            dst_pitch,
            width_in_bytes: width,
            height,
        };
        self.current()?;
        // SAFETY: `p` describes memory the caller vouches for.
        check("cuMemcpy2DAsync", unsafe {
            (self.api.memcpy_2d_async)(&p, self.stream)
        })
    }

    /// Enqueues setting `len` bytes at `dst` to zero.
    ///
    /// # Safety
    /// `dst` must be a device allocation of the stream's context of at least
    /// `len` bytes.
    pub unsafe fn zero(&self, dst: Ptr, len: usize) -> Result<(), StreamError> {
        self.current()?;
        // SAFETY: as the caller vouches.
        check("cuMemsetD8Async", unsafe {
            (self.api.memset_d8_async)(dst, 0, len, self.stream)
        })
    }

    /// Enqueues a host-to-device copy of `src` to `dst`, then waits for the
    /// stream (so `src` may be reused at once).
    ///
    /// # Safety
    /// `dst` must be a device allocation of at least `src.len()` bytes.
    pub unsafe fn upload(&self, dst: Ptr, src: &[u8]) -> Result<(), StreamError> {
        self.current()?;
        // SAFETY: as the caller vouches; the sync keeps `src` borrowed until done.
        check("cuMemcpyHtoDAsync", unsafe {
            (self.api.memcpy_htod_async)(dst, src.as_ptr().cast(), src.len(), self.stream)
        })?;
        self.sync()
    }

    /// Copies `dst.len()` bytes from the device address `src` after every
    /// earlier operation of the stream, and waits for them.
    ///
    /// # Safety
    /// `src` must be a device allocation of at least `dst.len()` bytes.
    pub unsafe fn download(&self, dst: &mut [u8], src: Ptr) -> Result<(), StreamError> {
        self.current()?;
        // SAFETY: as the caller vouches; the sync keeps `dst` borrowed until done.
        check("cuMemcpyDtoHAsync", unsafe {
            (self.api.memcpy_dtoh_async)(dst.as_mut_ptr().cast(), src, dst.len(), self.stream)
        })?;
        self.sync()
    }

    /// Waits for every operation enqueued on the stream.
    pub fn sync(&self) -> Result<(), StreamError> {
        // SAFETY: the stream is alive (owned by `self`).
        check("cuStreamSynchronize", unsafe {
            (self.api.stream_synchronize)(self.stream)
        })
    }
}

impl Drop for CudaStream {
    fn drop(&mut self) {
        // SAFETY: created by `cuStreamCreate` in `create`; destroyed once.
        unsafe {
            (self.api.stream_destroy)(self.stream);
        }
    }
}
