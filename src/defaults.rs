//! Upstream's generation defaults (heartlib's pipeline and example CLI): the
//! one place `heart-run`, presets, calibration and the tools take them from.

/// Classifier-free guidance scale of the LM.
pub const CFG_SCALE: f32 = 1.5;
/// Sampling temperature.
pub const TEMPERATURE: f32 = 1.0;
/// Top-k candidates.
pub const TOPK: usize = 50;
/// Euler steps of the codec's flow matching.
pub const FLOW_STEPS: usize = 10;
/// Codec classifier-free guidance.
pub const CODEC_GUIDANCE: f32 = 1.25;
/// Song length in seconds (upstream example: 240 000 ms).
pub const DURATION_S: f32 = 240.0;
/// Frames drafted per speculative round when speculation is asked for without
/// a count (speculation itself is off unless asked for: it keeps the output
/// distribution but draws other samples for the same seed).
pub const DRAFT_FRAMES: usize = 4;
