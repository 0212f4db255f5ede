//! [`Memory`]: where the device loop's fixed buffers live and how bytes move
//! in and out of them.
//!
//! - [`Memory::Cuda`] (feature `gpu`): buffers from the session's CUDA
//!   allocator; uploads, appends and read-backs on the [`CudaStream`] the
//!   providers were given as `user_compute_stream`, so each copy is ordered
//!   with the kernels of the run before and after it.
//! - [`Memory::Host`]: the same loop over ONNX Runtime CPU tensors (plain
//!   `memcpy`s). The CPU provider gains nothing from it; it exists so the
//!   whole device loop — binding plans, fixed addresses, appends, rollback,
//!   the frame graph on bound noise — runs and is tested on machines without
//!   a GPU against the host loop's codes.
//!
//! Every copy is bounds-checked against the tensors' sizes before it is
//! issued (a device copy has no bounds of its own).

#[cfg(feature = "gpu")]
use heart_backend::stream::CudaStream;
use ort::memory::Allocator;
use ort::session::RunOptions;
use ort::value::{DynTensor, TensorElementType};

use super::layout::{Copy2d, Elem};
use crate::lm::LmError;

/// A tensor of the loop with its size in bytes.
pub struct Buf {
    /// The ONNX Runtime value bound to the sessions.
    pub tensor: DynTensor,
    /// Its size in bytes.
    pub bytes: usize,
}

impl Buf {
    /// The buffer's address (device or host), stable for its lifetime.
    pub fn addr(&self) -> usize {
        self.tensor.data_ptr() as usize
    }
}

/// The memory the loop's buffers live in.
pub enum Memory {
    /// ONNX Runtime's CPU allocator.
    Host {
        /// The default CPU allocator.
        allocator: Allocator,
    },
    /// A CUDA device through the session's allocator and the providers' stream.
    #[cfg(feature = "gpu")]
    Cuda {
        /// The session allocator of the provider's device memory.
        allocator: Allocator,
        /// The stream the providers run on (`user_compute_stream`).
        stream: CudaStream,
    },
}

fn mem_err(what: impl std::fmt::Display) -> LmError {
    LmError::Input(format!("device loop: {what}"))
}

fn element_type(elem: Elem) -> TensorElementType {
    match elem {
        Elem::F32 => TensorElementType::Float32,
        Elem::F16 => TensorElementType::Float16,
        Elem::I64 => TensorElementType::Int64,
    }
}

impl Memory {
    /// ONNX Runtime CPU memory.
    pub fn host() -> Self {
        Self::Host {
            allocator: Allocator::default(),
        }
    }

    fn allocator(&self) -> &Allocator {
        match self {
            Self::Host { allocator } => allocator,
            #[cfg(feature = "gpu")]
            Self::Cuda { allocator, .. } => allocator,
        }
    }

    /// Whether buffers live on a GPU.
    pub fn on_device(&self) -> bool {
        !matches!(self, Self::Host { .. })
    }

    /// A buffer of `elem` × `dims`, allocated once.
    pub fn alloc(&self, elem: Elem, dims: &[usize]) -> Result<Buf, LmError> {
        let tensor = DynTensor::new(self.allocator(), element_type(elem), dims.to_vec())
            .map_err(|e| mem_err(format!("allocating {elem:?} {dims:?}: {e}")))?;
        Ok(Buf {
            tensor,
            bytes: elem.bytes() * dims.iter().product::<usize>(),
        })
    }

    /// Sets every byte of `buf` to zero (before the next run). The caches
    /// start zeroed: masked positions are read by the attention MatMul before
    /// the mask is added, and a NaN bit pattern left in fresh device memory
    /// would survive `-inf` masking (NaN + -inf = NaN).
    pub fn zero(&self, buf: &mut Buf) -> Result<(), LmError> {
        match self {
            Self::Host { .. } => {
                // SAFETY: `buf` is a CPU tensor of `buf.bytes` bytes.
                unsafe { buf.tensor.data_ptr_mut().cast::<u8>().write_bytes(0, buf.bytes) };
                Ok(())
            }
            #[cfg(feature = "gpu")]
            // SAFETY: a device allocation of `buf.bytes` bytes.
            Self::Cuda { stream, .. } => unsafe { stream.zero(buf.addr() as u64, buf.bytes) }.map_err(mem_err),
        }
    }

    /// Copies `src` into the start of `dst` (before the next run).
    pub fn upload(&self, dst: &mut Buf, src: &[u8]) -> Result<(), LmError> {
        if src.len() > dst.bytes {
            return Err(mem_err(format!("upload of {} bytes into {}", src.len(), dst.bytes)));
        }
        match self {
            Self::Host { .. } => {
                // SAFETY: `dst` is a CPU tensor of `dst.bytes` ≥ `src.len()` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.as_ptr(), dst.tensor.data_ptr_mut().cast::<u8>(), src.len())
                };
                Ok(())
            }
            #[cfg(feature = "gpu")]
            // SAFETY: a device allocation of at least `src.len()` bytes (checked above).
            Self::Cuda { stream, .. } => unsafe { stream.upload(dst.addr() as u64, src) }.map_err(mem_err),
        }
    }

    /// Copies the first `dst.len()` bytes of `src` out, after every earlier
    /// operation on the buffers.
    pub fn download(&self, src: &Buf, dst: &mut [u8]) -> Result<(), LmError> {
        if dst.len() > src.bytes {
            return Err(mem_err(format!("read-back of {} bytes from {}", dst.len(), src.bytes)));
        }
        match self {
            Self::Host { .. } => {
                // SAFETY: `src` is a CPU tensor of `src.bytes` ≥ `dst.len()` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.tensor.data_ptr().cast::<u8>(), dst.as_mut_ptr(), dst.len())
                };
                Ok(())
            }
            #[cfg(feature = "gpu")]
            // SAFETY: a device allocation of at least `dst.len()` bytes (checked above).
            Self::Cuda { stream, .. } => unsafe { stream.download(dst, src.addr() as u64) }.map_err(mem_err),
        }
    }

    /// Applies the strided copy `copy` from `src` into `dst` (a cache append).
    pub fn copy_2d(&self, dst: &mut Buf, src: &Buf, copy: &Copy2d) -> Result<(), LmError> {
        if !copy.fits(dst.bytes, src.bytes) {
            return Err(mem_err(format!(
                "append {copy:?} outside a {}-byte cache or a {}-byte step output",
                dst.bytes, src.bytes
            )));
        }
        match self {
            Self::Host { .. } => {
                // SAFETY: both are CPU tensors of the checked sizes, distinct allocations.
                let (d, s) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(dst.tensor.data_ptr_mut().cast::<u8>(), dst.bytes),
                        std::slice::from_raw_parts(src.tensor.data_ptr().cast::<u8>(), src.bytes),
                    )
                };
                copy.apply(d, s);
                Ok(())
            }
            #[cfg(feature = "gpu")]
            // SAFETY: both are live device allocations covering every byte `copy` addresses (checked above).
            Self::Cuda { stream, .. } => unsafe {
                stream.copy_2d(
                    ((dst.addr() + copy.dst_offset) as u64, copy.dst_pitch),
                    ((src.addr() + copy.src_offset) as u64, copy.src_pitch),
                    copy.width,
                    copy.height,
                )
            }
            .map_err(mem_err),
        }
    }

    /// Run options of a step: its captured graph, or none. ONNX Runtime's
    /// CUDA provider reads `gpu_graph_id` (`-1` = do not capture), the
    /// NvTensorRTRTX plugin `cuda_graph_annotation_id`; each ignores the
    /// other's key. Host memory runs without either.
    pub fn run_options(&self, capture: Option<u32>) -> Result<RunOptions, LmError> {
        let mut options = RunOptions::new().map_err(mem_err)?;
        if self.on_device() {
            let id = capture.map_or_else(|| "-1".to_string(), |id| id.to_string());
            for key in ["gpu_graph_id", "cuda_graph_annotation_id"] {
                options.set(key, &id).map_err(mem_err)?;
            }
        }
        Ok(options)
    }
}

/// The memory of a device loop whose sessions are not open yet: on a GPU the
/// stream must exist first, since the providers are created on it.
pub enum Pending {
    /// [`Memory::Host`].
    Host,
    /// [`Memory::Cuda`] once a session gives its allocator.
    #[cfg(feature = "gpu")]
    Cuda {
        /// The stream the sessions are opened with.
        stream: CudaStream,
        /// The CUDA device.
        ordinal: i32,
    },
}

impl Pending {
    /// The runtime to open a model's sessions with for frame loop `kind`,
    /// and its pending memory (`None` for the host loop). On a GPU backend
    /// the runtime's plan gets a new stream as `compute_stream` and CUDA-graph
    /// capture as its `device_cuda_graphs` setting says; without the `gpu`
    /// feature a GPU backend cannot take the device loop.
    pub fn for_runtime(
        rt: &heart_backend::OrtRuntime,
        kind: super::LoopKind,
    ) -> Result<(heart_backend::OrtRuntime, Option<Self>), LmError> {
        if kind == super::LoopKind::Host {
            return Ok((rt.clone(), None));
        }
        let Some(ordinal) = rt.plan.backend.device() else {
            return Ok((rt.clone(), Some(Self::Host)));
        };
        #[cfg(feature = "gpu")]
        {
            let stream = CudaStream::create(ordinal).map_err(mem_err)?;
            let mut plan = rt.plan.clone();
            plan.compute_stream = Some(stream.handle());
            plan.cuda_graph = plan.device_cuda_graphs == heart_backend::CudaGraphs::On;
            Ok((rt.clone().with_plan(plan), Some(Self::Cuda { stream, ordinal })))
        }
        #[cfg(not(feature = "gpu"))]
        {
            Err(mem_err(format!(
                "the device-resident loop on GPU {ordinal} ({:?}) needs a build with `--features gpu`",
                rt.plan.backend
            )))
        }
    }

    /// The memory, with a GPU's allocator taken from `session` (one of the
    /// sessions opened with [`Self::for_runtime`]'s runtime).
    pub fn finish(self, session: &ort::session::Session) -> Result<Memory, LmError> {
        let _ = session;
        match self {
            Self::Host => Ok(Memory::host()),
            #[cfg(feature = "gpu")]
            Self::Cuda { stream, ordinal } => {
                use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
                let info = MemoryInfo::new(
                    AllocationDevice::CUDA,
                    ordinal,
                    AllocatorType::Device,
                    MemoryType::Default,
                )
                .map_err(mem_err)?;
                let allocator = Allocator::new(session, info).map_err(mem_err)?;
                Ok(Memory::Cuda { allocator, stream })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_copies_are_bounds_checked_and_zero_clears_every_byte() {
        heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
        let memory = Memory::host();
        let mut a = memory.alloc(Elem::F32, &[2, 3]).unwrap();
        assert_eq!(a.bytes, 24);
        memory.upload(&mut a, &[0xFF; 24]).unwrap();
        assert!(memory.upload(&mut a, &[0; 25]).is_err(), "past the buffer");
        let mut back = [0u8; 24];
        memory.download(&a, &mut back).unwrap();
        assert_eq!(back, [0xFF; 24], "NaN bit patterns, as fresh device memory may hold");
        memory.zero(&mut a).unwrap();
        memory.download(&a, &mut back).unwrap();
        assert_eq!(back, [0; 24]);
        assert!(memory.download(&a, &mut [0u8; 25]).is_err());
        // A strided copy: rows of 4 bytes from a packed source into pitch 12.
        let src_data: Vec<u8> = (1..=8).collect();
        let mut src = memory.alloc(Elem::F32, &[2]).unwrap();
        memory.upload(&mut src, &src_data).unwrap();
        let copy = Copy2d {
            dst_offset: 4,
            dst_pitch: 12,
            src_offset: 0,
            src_pitch: 4,
            width: 4,
            height: 2,
        };
        memory.copy_2d(&mut a, &src, &copy).unwrap();
        memory.download(&a, &mut back).unwrap();
        assert_eq!(&back[4..8], &[1, 2, 3, 4]);
        assert_eq!(&back[16..20], &[5, 6, 7, 8]);
        assert_eq!(back.iter().filter(|&&b| b != 0).count(), 8, "nothing else written");
        let past = Copy2d { height: 3, ..copy };
        assert!(memory.copy_2d(&mut a, &src, &past).is_err(), "a row past either buffer");
    }
}
