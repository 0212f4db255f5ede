//! The device-resident decode loop of the GPU backends: KV caches allocated
//! once on the device at full capacity, fixed-address I/O binding (CUDA-graph
//! replay per step shape), appends and reads on the provider's own stream.
//!
//! [`layout`] is the device-free part (geometry, step schedule, which
//! backends take this loop), tested on the CPU; [`stack`] drives an ONNX
//! Runtime session with it (feature `gpu`).

pub mod layout;
#[cfg(feature = "gpu")]
pub mod stack;

pub use layout::{DeviceKvLayout, LoopKind};
