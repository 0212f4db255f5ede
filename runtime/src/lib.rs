//! `heart-runtime`: runs HeartMuLa / HeartCodec engines on ONNX Runtime.
//!
//! - [`mem`]: peak / current resident memory.
//! - [`ort_env`]: finding and loading the ONNX Runtime library.
//! - [`settings`]: generation settings, presets and upstream defaults.

pub mod mem;
pub mod ort_env;
pub mod settings;
