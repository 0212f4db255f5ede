//! `heart` core: everything about HeartMuLa / HeartCodec that does not run a graph.
//!
//! - [`config`]: model configs, the flavor table, generation ids, codec config.
//! - [`checkpoint`]: memory-mapped safetensors checkpoints (single file or sharded).
//! - [`layout`]: finding checkpoint files as users lay them out; validated opening.
//! - [`tensors`]: expected tensor names and shapes per config; checkpoint validation.
//! - [`prompt`]: text tokenizer and HeartMuLa prompt construction.
//! - [`fixture`]: reader for golden-fixture folders and tolerance comparisons.
//! - [`precision`]: the precisions engines are built at.
//! - [`manifest`]: the engine folder's `manifest.toml` (files, hashes, build inputs).

pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod error;
pub mod fixture;
pub mod layout;
pub mod manifest;
pub mod precision;
pub mod prompt;
pub mod tensors;

pub use error::{Error, Result};
