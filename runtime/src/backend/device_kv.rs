//! A KV cache in GPU memory, bound to a session through ONNX Runtime's I/O
//! binding (feature `gpu`).
//!
//! **Status: compiled and linted, never executed** (no GPU on the project's
//! machines), and **not yet used by the frame loop**: [`crate::lm::session`]
//! binds host caches, so on a GPU every step uploads every layer's cache and
//! downloads the new keys/values. [`DeviceKv`] is the replacement: buffers from
//! the session's CUDA allocator at a fixed capacity (their addresses never
//! move, as CUDA-graph replay requires), bound in place as `past_key_i` /
//! `past_value_i`, the step's `new_key_i` / `new_value_i` left on the device
//! and appended with one pitched device-to-device copy each
//! ([`super::strided`]). With it, per step only the embeddings go up and the
//! logits come down; sampling stays on the host, outside any captured graph
//! (upstream found that capturing the sampler's RNG freezes its randomness).

use std::sync::Arc;

use cudarc::driver::{CudaContext, sys};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session, SessionOutputs};
use ort::value::{DynTensor, DynTensorValueType, TensorElementType};

use super::strided::{Copy2d, append_copies};
use crate::lm::kv_cache::{CacheDtype, CacheShape};
use heart::engine::io;

/// Errors of the device cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// ONNX Runtime failed (allocation, binding, output lookup).
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    /// The CUDA driver failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// More positions than the cache holds.
    #[error("device KV cache full: {needed} positions needed, capacity {capacity}")]
    Full {
        /// Positions after the step.
        needed: usize,
        /// Allocated positions.
        capacity: usize,
    },
}

/// Keys and values of every layer of one stack, resident on one GPU.
pub struct DeviceKv {
    // Fields drop in order: the tensors before the allocator that freed them.
    keys: Vec<DynTensor>,
    values: Vec<DynTensor>,
    _allocator: Allocator,
    ctx: Arc<CudaContext>,
    memory: MemoryInfo<'static>,
    shape: CacheShape,
    elem: usize,
    capacity: usize,
    len: usize,
}

impl DeviceKv {
    /// Allocates `capacity` positions per layer on `device` through `session`'s
    /// CUDA allocator. The caller must have checked the driver is present
    /// ([`super::probe`]); sessions on the CUDA or TensorRT backend imply it.
    pub fn new(
        session: &Session,
        device: i32,
        shape: CacheShape,
        dtype: CacheDtype,
        capacity: usize,
    ) -> Result<Self, DeviceError> {
        let ordinal = usize::try_from(device).unwrap_or_default();
        let ctx = CudaContext::new(ordinal)?;
        let memory = MemoryInfo::new(
            AllocationDevice::CUDA,
            device,
            AllocatorType::Device,
            MemoryType::Default,
        )?;
        let allocator = Allocator::new(session, memory.clone())?;
        let (ty, elem) = match dtype {
            CacheDtype::F32 => (TensorElementType::Float32, 4),
            CacheDtype::F16 => (TensorElementType::Float16, 2),
        };
        let (b, kv, hd) = (shape.batch, shape.kv_heads, shape.head_dim);
        let alloc = |dims: [usize; 4]| DynTensor::new(&allocator, ty, dims);
        let mut keys = (0..shape.layers)
            .map(|_| alloc([b, kv, hd, capacity]))
            .collect::<ort::Result<Vec<_>>>()?;
        let mut values = (0..shape.layers)
            .map(|_| alloc([b, kv, capacity, hd]))
            .collect::<ort::Result<Vec<_>>>()?;
        // Device allocations start undefined; masked positions must still be
        // finite (0 · NaN would poison the attention), so zero them once.
        ctx.bind_to_thread()?;
        let bytes = b * kv * hd * capacity * elem;
        for t in keys.iter_mut().chain(values.iter_mut()) {
            // SAFETY: `t` is a device allocation of exactly `bytes` bytes in
            // the primary context bound above.
            unsafe { cudarc::driver::result::memset_d8_sync(t.data_ptr_mut() as sys::CUdeviceptr, 0, bytes)? };
        }
        Ok(Self {
            _allocator: allocator,
            ctx,
            memory,
            keys,
            values,
            shape,
            elem,
            capacity,
            len: 0,
        })
    }

    /// Valid positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is valid.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocated positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (buffers and their addresses are kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Binds every layer's cache as input and its new keys/values as device
    /// outputs. Bind once: the addresses never change.
    pub fn bind(&self, binding: &mut IoBinding) -> ort::Result<()> {
        for (layer, (k, v)) in self.keys.iter().zip(&self.values).enumerate() {
            binding.bind_input(io::past_key(layer), k)?;
            binding.bind_input(io::past_value(layer), v)?;
            binding.bind_output_to_device(io::new_key(layer), &self.memory)?;
            binding.bind_output_to_device(io::new_value(layer), &self.memory)?;
        }
        Ok(())
    }

    /// Appends the `s` new positions of a finished run (`outputs` of
    /// `run_binding`, which has synchronised its stream) with synchronous
    /// device-to-device copies, so the next run sees them.
    pub fn append(&mut self, outputs: &SessionOutputs<'_>, s: usize) -> Result<(), DeviceError> {
        if self.len + s > self.capacity {
            return Err(DeviceError::Full {
                needed: self.len + s,
                capacity: self.capacity,
            });
        }
        self.ctx.bind_to_thread()?;
        let (key_copy, value_copy) = append_copies(self.shape, self.elem, self.capacity, self.len, s);
        for layer in 0..self.shape.layers {
            let new_key = output(outputs, &io::new_key(layer))?;
            let new_value = output(outputs, &io::new_value(layer))?;
            copy_2d(key_copy, new_key, self.keys[layer].data_ptr_mut())?;
            copy_2d(value_copy, new_value, self.values[layer].data_ptr_mut())?;
        }
        self.len += s;
        Ok(())
    }
}

/// Device address of the tensor output `name`.
fn output(outputs: &SessionOutputs<'_>, name: &str) -> Result<*const std::ffi::c_void, DeviceError> {
    let value = outputs
        .get(name)
        .ok_or_else(|| DeviceError::Ort(ort::Error::new(format!("graph has no output `{name}`"))))?;
    Ok(value.view().downcast::<DynTensorValueType>()?.data_ptr())
}

/// One pitched device-to-device copy.
fn copy_2d(c: Copy2d, src: *const std::ffi::c_void, dst: *mut std::ffi::c_void) -> Result<(), DeviceError> {
    let params = sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: src as sys::CUdeviceptr,
        srcArray: std::ptr::null_mut(),
        srcPitch: c.src_pitch,
        dstXInBytes: c.dst_offset,
        dstY: 0,
        dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: dst as sys::CUdeviceptr,
        dstArray: std::ptr::null_mut(),
        dstPitch: c.dst_pitch,
        WidthInBytes: c.width,
        Height: c.rows,
    };
    // SAFETY: both pointers are CUDA allocations of ONNX Runtime's allocator in
    // the device's primary context (bound to this thread); `append_copies`
    // keeps every row inside the source `[.., s]` and destination `[.., C]`
    // buffers, as its host test checks.
    unsafe { sys::cuMemcpy2D_v2(&params).result()? };
    Ok(())
}
