//! `heart-runtime`: runs HeartMuLa / HeartCodec engines on ONNX Runtime.
//!
//! - [`backend`]: CPU, CUDA or TensorRT sessions (`--backend`; GPU code behind feature `gpu`).
//! - [`bench`](mod@bench): benchmarks against the roofline (bandwidth, bytes per frame, timers, reports).
//! - [`codec`]: HeartCodec detokenization (codes → stereo audio).
//! - [`conform`]: the conformance harness behind `heart-conform`.
//! - [`eval`]: quality A/B of engine folders (`heart-eval`) and the tapped
//!   frame loop calibration uses.
//! - [`lm`]: HeartMuLa sessions, KV cache, sampler and frame loop.
//! - [`mem`]: peak / current resident memory.
//! - [`noise`]: seeded and recorded random streams (sampler and codec noise).
//! - [`ort_env`]: finding and loading the ONNX Runtime library.
//! - [`settings`]: generation settings, presets and upstream defaults.
//! - [`song`]: tags + lyrics → waveform, the pipeline behind `heart-run`.
//! - [`wav`]: atomic WAV output.

pub mod backend;
pub mod bench;
pub mod codec;
pub mod conform;
pub mod eval;
pub mod lm;
pub mod mem;
pub mod noise;
pub mod ort_env;
pub mod settings;
pub mod song;
pub mod wav;
