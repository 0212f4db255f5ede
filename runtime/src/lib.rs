//! `heart-runtime`: runs HeartMuLa / HeartCodec engines on ONNX Runtime.

pub mod conform;
pub mod ort_env;
