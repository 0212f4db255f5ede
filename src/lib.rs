//! `heart` core: everything about HeartMuLa / HeartCodec that does not run a graph.
//!
//! - [`config`]: model configs, the flavor table, generation ids, codec config.
//! - [`checkpoint`]: memory-mapped safetensors checkpoints (single file or sharded).
//! - [`precision`]: the precisions engines are built at.

pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod error;
pub mod precision;

pub use error::{Error, Result};
