//! ONNX graph construction for HeartMuLa and HeartCodec.

/// Generated ONNX protobuf types (`onnx.proto` from the `onnx` 1.23.2 wheel).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
