//! `heart-runtime`: runs HeartMuLa / HeartCodec engines on ONNX Runtime.

pub mod ort_env;
