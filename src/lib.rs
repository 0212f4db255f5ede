//! `heart` core: everything about HeartMuLa / HeartCodec that does not run a graph.
//!
//! - [`config`]: model configs, the flavor table, generation ids, codec config.
//! - [`checkpoint`]: memory-mapped safetensors checkpoints (single file or sharded).
//! - [`layout`]: finding checkpoint files as users lay them out; validated opening.
//! - [`tensors`]: expected tensor names and shapes per config; checkpoint validation.
//! - [`prompt`]: text tokenizer and HeartMuLa prompt construction.
//! - [`fixture`]: reader for golden-fixture folders and tolerance comparisons.
//! - [`geometry`]: the 80 ms frame and HeartCodec's window geometry.
//! - [`cost`]: the cost model (bytes per LM frame, codec FLOPs) behind the benchmark floors.
//! - [`defaults`]: upstream's generation defaults.
//! - [`profile`]: build profiles (`configs/build/*.toml`): schema and validation.
//! - [`precision`]: the precisions engines are built at.
//! - [`manifest`]: the engine folder's `manifest.toml` (files, hashes, build inputs).
//! - [`safe_path`], [`onnx_refs`]: checks on paths read from untrusted files (manifests, checkpoint
//!   indexes, ONNX external-data locations).
//! - [`quant`]: bit-exact FP8 E4M3FN / NVFP4 reference quantizers and the calibration prompt set.
//! - `trt_native` (feature `tensorrt-native`): native TensorRT plan runner over a C ABI shim.

pub mod checkpoint;
pub mod config;
pub mod cost;
pub mod defaults;
pub mod engine;
pub mod error;
pub mod fixture;
pub mod geometry;
pub mod layout;
pub mod manifest;
pub mod onnx_refs;
pub mod precision;
pub mod profile;
pub mod prompt;
pub mod quant;
pub mod safe_path;
pub mod tensors;
#[cfg(feature = "tensorrt-native")]
pub mod trt_native;

pub use error::{Error, Result};
