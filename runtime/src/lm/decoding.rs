//! One entry point for the ways of decoding a song's frames: [`Decoding`]
//! picks plain sampling from the target (one frame-graph call per frame when
//! the engine has `frame.onnx`, else the per-step graphs) or lossless
//! speculative decoding with a draft engine, and [`decode`] runs it. Callers (the song pipeline, the
//! benchmark) cannot tell the two apart beyond the statistics speculation
//! adds: the same prompt, parameters and noise source go in, kept frames and
//! the stop reason come out.

use super::frame_graph::{WholeFrame, generate_frames, takes};
use super::frame_loop::{FrameEvent, GenParams, Generation, Sampling, try_generate};
use super::model::{HeartMula, Taps};
use super::sampler::{NoiseSource, SamplerParams};
use super::speculative::{SpecEvent, SpecParams, SpecStats, try_generate_speculative};
use super::{LmError, Prompt};

/// How frames are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// Every frame sampled from the target engine: through its frame graph
    /// when it has one that takes the sampler's `top_k`
    /// ([`super::frame_graph::takes`]), else through its per-step graphs (one
    /// backbone call, then one decoder call per codebook). Same codes either way.
    Plain,
    /// Drafted `draft_frames` at a time by a draft engine and verified by the
    /// target (same output distribution; other samples for a seed).
    Speculative {
        /// Frames drafted per round (≥ 1).
        draft_frames: usize,
    },
}

impl Decoding {
    /// `Plain` for 0 drafted frames per round, else `Speculative`.
    pub fn from_draft_frames(draft_frames: usize) -> Self {
        match draft_frames {
            0 => Self::Plain,
            k => Self::Speculative { draft_frames: k },
        }
    }
}

/// The engines a decode runs on: the target, and the draft speculation needs.
pub struct Engines<'a> {
    /// The model whose distribution the frames follow.
    pub target: &'a mut HeartMula,
    /// The cheaper engine that drafts frames (speculative decoding only).
    pub draft: Option<&'a mut HeartMula>,
}

/// Frames decoded and, for speculative decoding, its counters.
#[derive(Debug)]
pub struct Decoded {
    /// Kept frames and why generation stopped.
    pub generation: Generation,
    /// Acceptance counters and timings (speculative decoding only).
    pub speculation: Option<SpecStats>,
}

/// One kept frame, as [`decode`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct KeptFrame<'a> {
    /// Frames kept so far, this one included.
    pub frames: usize,
    /// The most frames this decode can keep.
    pub max_frames: usize,
    /// The frame's codes (row 0), one per codebook.
    pub codes: &'a [i64],
}

/// Decodes `prompt`'s frames as `decoding` says; every random draw comes from
/// `noise`. `kept` is called once per kept frame, in order, as soon as the
/// frame is final; its first error ends decoding and is returned.
/// Speculative decoding without a draft engine is an [`LmError::Input`].
pub fn decode(
    decoding: Decoding,
    engines: Engines<'_>,
    prompt: &Prompt,
    generation: GenParams,
    sampler: SamplerParams,
    noise: &mut dyn NoiseSource,
    kept: &mut dyn FnMut(KeptFrame<'_>) -> Result<(), LmError>,
) -> Result<Decoded, LmError> {
    let mut keeper = Keeper { count: 0, kept };
    match decoding {
        Decoding::Plain if engines.target.has_frame_graph() && takes(sampler, engines.target.dims().audio_vocab) => {
            let generation = generate_frames(
                engines.target,
                prompt,
                &generation,
                sampler,
                noise,
                &mut |f: &WholeFrame<'_>| keeper.frame(f.kept, f.max_frames, f.codes),
            )?;
            Ok(Decoded {
                generation,
                speculation: None,
            })
        }
        Decoding::Plain => {
            let mut picker = Sampling { params: sampler, noise };
            let generation = try_generate(
                engines.target,
                prompt,
                &generation,
                &Taps::default(),
                &mut picker,
                &mut |e: &FrameEvent<'_>| keeper.frame(e.kept, e.max_frames, &e.codes[0]),
            )?;
            Ok(Decoded {
                generation,
                speculation: None,
            })
        }
        Decoding::Speculative { draft_frames } => {
            let Some(draft) = engines.draft else {
                return Err(LmError::Input(
                    "speculative decoding needs a draft engine (open the engine folder's draft)".into(),
                ));
            };
            let params = SpecParams {
                generation,
                sampler,
                draft_frames,
            };
            let out = try_generate_speculative(engines.target, draft, prompt, &params, noise, &mut |e: &SpecEvent<
                '_,
            >| {
                keeper.frame(e.kept, e.max_frames, e.codes)
            })?;
            Ok(Decoded {
                generation: out.generation,
                speculation: Some(out.stats),
            })
        }
    }
}

/// Numbers the kept frames of a decode and hands each to the caller.
struct Keeper<'a> {
    count: usize,
    kept: &'a mut dyn FnMut(KeptFrame<'_>) -> Result<(), LmError>,
}

impl Keeper<'_> {
    /// Reports a final frame (row 0's `codes`) unless it is the dropped
    /// end-of-audio frame.
    fn frame(&mut self, kept: bool, max_frames: usize, codes: &[i64]) -> Result<(), LmError> {
        if !kept {
            return Ok(());
        }
        self.count += 1;
        (self.kept)(KeptFrame {
            frames: self.count,
            max_frames,
            codes,
        })
    }
}
