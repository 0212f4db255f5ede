//! `heart-runtime`: runs HeartMuLa / HeartCodec engine folders. A library only:
//! the CLIs (`heart-run`) and tools (`heart-bench`, `heart-eval`,
//! `heart-conform`) are crates of their own on top of it, and where sessions
//! run is `heart-backend`'s business.
//!
//! - [`engine`]: an engine folder opened through its manifest, handing out its
//!   LM, draft, codec and tokenizer.
//! - [`lm`]: HeartMuLa sessions, KV cache, sampler, and the frame loop behind
//!   one [`lm::Decoding`] choice (plain or speculative).
//! - [`codec`]: HeartCodec detokenization (codes → stereo audio).
//! - [`song`]: tags + lyrics → waveform, the pipeline behind `heart-run`.
//! - [`settings`]: generation settings and presets.
//! - [`wav`]: atomic WAV output; [`wav_stream`]: WAV onto a pipe as audio is made.
//! - [`noise`]: seeded and recorded random streams (sampler and codec noise).
//! - [`mem`]: peak / current resident memory.

pub mod codec;
pub mod engine;
pub mod lm;
pub mod mem;
pub mod noise;
pub mod settings;
pub mod song;
pub mod wav;
pub mod wav_stream;
