//! The device-resident decode loop of the GPU backends: KV caches allocated
//! once at full capacity, fixed-address I/O binding (CUDA-graph replay per
//! step shape), uploads, appends and read-backs on the provider's own stream.
//!
//! [`layout`] is the device-free part (geometry, binding plans, CUDA-graph
//! ids, step schedule, which backends take this loop); [`memory`] moves bytes
//! in and out of the buffers (a CUDA stream with feature `gpu`, plain copies
//! on ONNX Runtime CPU tensors otherwise); [`stack`] steps one graph over its
//! cache; [`lm`] holds one model's caches and shapes. The whole loop also
//! runs on [`memory::Memory::Host`], which is how it is tested without a GPU.

pub mod layout;
pub mod lm;
pub mod memory;
pub mod stack;

pub use layout::{Cursor, DeviceKvLayout, LoopKind};
pub use lm::{DeviceLm, ModelSizes};
pub use memory::Memory;
