//! `heart-backend`: where heart's graphs run. Finding and loading the ONNX
//! Runtime library ([`library`]), choosing the execution provider for a
//! machine and an engine folder ([`plan`]: the CPU, or an NVIDIA GPU through
//! ONNX Runtime's CUDA or TensorRT providers behind the `gpu` feature, with
//! the TensorRT optimization [`profiles`], or ONNX Runtime's NvTensorRTRTX
//! plugin with prebuilt TensorRT-RTX engines ([`trt_rtx`]), found and loaded
//! at run time without the `gpu` feature), the one session factory every
//! graph is opened through ([`OrtRuntime::open_session`]), the panic-free
//! probe of the NVIDIA driver ([`driver`]) and what this machine can run
//! ([`doctor`]).
//!
//! Knows nothing of the model: graph names and shapes come from the core
//! `heart` crate and the engine folder's manifest.

pub mod device;
pub mod doctor;
pub mod driver;
pub mod int4_op;
pub mod library;
pub mod plan;
pub mod profiles;
#[cfg(feature = "gpu")]
mod providers;
pub mod rtx_libs;
mod session;
#[cfg(feature = "gpu")]
pub mod stream;
pub mod trt_rtx;
pub mod user_cache;

pub use device::{GpuInfo, Probe};
pub use library::{ORT_VERSION, OrtSetupError, init};
pub use plan::{Backend, BackendChoice, BackendError, CudaGraphs, ExecutionPlan, TrtMode, probe};
pub use session::{Optimization, OrtRuntime, SessionConfig, SessionError};
