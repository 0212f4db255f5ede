//! ONNX graph construction for HeartMuLa and HeartCodec.
//!
//! - [`graph`]: the typed [`GraphBuilder`] (inputs/outputs, nodes, initializers
//!   streamed to one external data file per graph).
//! - [`ops`]: named operator helpers on the builder.
//! - [`ep_context`]: EP-context models that hand ONNX Runtime a prebuilt engine.
//! - [`external`]: the external data writer and [`WrittenFile`].
//! - [`codec`]: the HeartCodec graphs, tables and config ([`codec::export_codec`]).
//! - [`blocks`]: Llama building blocks (RMSNorm, linear, SwiGLU, GQA + RoPE).
//! - [`linears`]: how the LM's linear layers are emitted (dense, quantized by
//!   a [`linears::QuantPlan`], probed for calibration).
//! - [`frame`]: the one-call-per-frame graph (backbone step, sampling,
//!   decoder walk; [`frame::export_frame`]).
//! - [`lm`]: the HeartMuLa backbone/decoder graphs and embedding tables
//!   ([`lm::export_lm`]).
//! - [`quant`]: quantized weights and activations (NVFP4, FP8), portable and
//!   TensorRT lowerings.
//! - [`tables`]: streaming f32 safetensors writer.
//! - [`types`]: [`DType`], [`Dim`], [`Value`], [`Attr`], [`Layout`].
//! - [`error`]: the crate error, [`ExportError`].

pub mod blocks;
pub mod codec;
pub mod dense;
pub mod ep_context;
pub mod error;
pub mod external;
pub mod frame;
pub mod graph;
pub mod linears;
pub mod lm;
pub mod ops;
pub mod quant;
pub mod tables;
pub mod types;

pub use error::{ExportError, Result};
pub use external::WrittenFile;
pub use graph::{Attr, DType, Dim, GraphBuilder, Layout, Value};

/// Generated ONNX protobuf types (`onnx.proto` from the `onnx` 1.23.2 wheel).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
