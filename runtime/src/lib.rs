//! `heart-runtime`: runs HeartMuLa / HeartCodec engines on ONNX Runtime.

pub mod codec;
pub mod ort_env;
pub mod wav;
pub mod conform;
