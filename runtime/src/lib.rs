//! `heart-runtime`: runs HeartMuLa / HeartCodec engines on ONNX Runtime.
//!
//! - [`ort_env`]: finding and loading the ONNX Runtime library.
//! - [`settings`]: generation settings, presets and upstream defaults.

pub mod ort_env;
pub mod settings;
