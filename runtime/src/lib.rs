//! `heart-runtime`: runs HeartMuLa / HeartCodec engines on ONNX Runtime.
//!
//! - [`bench`](mod@bench): benchmarks against the roofline (bandwidth, bytes per frame, timers, reports).
//! - [`conform`]: the conformance harness behind `heart-conform`.
//! - [`mem`]: peak / current resident memory.
//! - [`ort_env`]: finding and loading the ONNX Runtime library.
//! - [`settings`]: generation settings, presets and upstream defaults.

pub mod bench;
pub mod conform;
pub mod mem;
pub mod ort_env;
pub mod settings;
