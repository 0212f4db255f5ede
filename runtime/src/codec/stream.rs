//! Detokenization of a code sequence that is still growing: audio comes out
//! window by window while the LM writes the frames after it.
//!
//! Why it gives the same audio as decoding the finished sequence: window `w`
//! covers code frames `[320·w, 320·w + 372)` ([`heart::geometry`]). Once that
//! many frames exist, the window belongs to the song's [`WindowPlan`] whatever
//! its final length `T` (the plan pads to at least `T ≥ 320·w + 372` frames and
//! starts a window at every hop that fits), and its codes are real frames, not
//! the looping pad. Windows still run in order (window `w > 0` takes its
//! context from window `w − 1`'s final latents) and draw the flow noise in the
//! same order, so every window sees the inputs it sees in
//! [`super::Codec::detokenize`], which is this stream run on the finished
//! sequence. Only the windows that reach past the frames written so far (the
//! looped tail) wait for the end of generation.
//!
//! Emitted audio: after window `w` all assembled samples but the last overlap
//! (`104` latent frames, which the next window cross-fades) are final. They
//! never pass the song's `target_len`, because an early window leaves at least
//! `104` latent frames of real codes after them, so cropping at the end only
//! cuts the last chunk.

use heart::config::CodecConfig;
use heart::geometry::{HOP_CODES, OVERLAP_LATENTS, WINDOW_CODES, WINDOW_LATENTS};
use ndarray::{Array2, ArrayView2};

use super::{
    Assembler, Audio, Codec, CodecError, DetokenizeParams, NoiseSource, Result, WindowInputs, WindowPlan, WindowTrace,
    solve_window,
};

/// A run of finished audio samples.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    /// Samples per channel before this chunk (the chunks of one song tile it
    /// from 0 without gaps).
    pub offset: usize,
    /// Number of channels.
    pub channels: u16,
    /// Samples per second.
    pub sample_rate: u32,
    /// `channels × len` samples, channel-major (as [`Audio`]).
    pub samples: Vec<f32>,
}

impl AudioChunk {
    /// Samples per channel.
    pub fn len(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Whether the chunk holds no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The state of one song's detokenization between windows.
#[derive(Debug)]
pub struct WindowStream {
    params: DetokenizeParams,
    latent: usize,
    sample_rate: u32,
    assembler: Assembler,
    overlap_samples: usize,
    x0: Vec<f32>,
    previous: Option<Vec<f32>>,
    next: usize,
    emitted: usize,
    clamped: usize,
}

impl WindowStream {
    /// An empty stream for `codec`'s config.
    pub fn new(cfg: &CodecConfig, params: DetokenizeParams) -> Self {
        let latent = cfg.out_channels;
        let overlap_samples = OVERLAP_LATENTS * cfg.samples_per_latent();
        Self {
            params,
            latent,
            sample_rate: cfg.sample_rate,
            assembler: Assembler::new(2, overlap_samples),
            overlap_samples,
            x0: vec![0f32; WINDOW_LATENTS * latent],
            previous: None,
            next: 0,
            emitted: 0,
            clamped: 0,
        }
    }

    /// Windows decoded so far.
    pub fn windows_done(&self) -> usize {
        self.next
    }

    /// Code frames that must exist before the next window can be decoded early.
    pub fn frames_for_next(&self) -> usize {
        self.next * HOP_CODES + WINDOW_CODES
    }

    /// The first code frame of the next window.
    pub fn next_start(&self) -> usize {
        self.next * HOP_CODES
    }

    /// Decodes the next window from its [`WINDOW_CODES`] codes
    /// (`[num_quantizers, 372]`, frames `next_start()..` of the song, all of
    /// them generated: [`WindowStream::frames_for_next`]) and returns the audio
    /// that is final after it. An error from `observer` (called once the
    /// window is decoded) is returned as is.
    pub fn push_window(
        &mut self,
        codec: &mut Codec,
        codes: ArrayView2<'_, i64>,
        noise: &mut dyn NoiseSource,
        observer: &mut dyn FnMut(&WindowTrace<'_>) -> Result<()>,
    ) -> Result<AudioChunk> {
        self.decode_window(codec, codes, noise, observer)?;
        let ready = self.assembler.len().saturating_sub(self.overlap_samples);
        Ok(self.take(ready))
    }

    fn decode_window(
        &mut self,
        codec: &mut Codec,
        codes: ArrayView2<'_, i64>,
        noise: &mut dyn NoiseSource,
        observer: &mut dyn FnMut(&WindowTrace<'_>) -> Result<()>,
    ) -> Result<()> {
        if codes.ncols() != WINDOW_CODES {
            return Err(CodecError::InputLength {
                what: "window codes",
                expected: WINDOW_CODES,
                got: codes.ncols(),
            });
        }
        let conditioning = codec.tables.condition(codes)?;
        self.clamped += conditioning.clamped;
        noise.fill(&mut self.x0)?;
        let context = self
            .previous
            .as_deref()
            .map_or(&[][..], |p| &p[(WINDOW_LATENTS - OVERLAP_LATENTS) * self.latent..]);
        let inputs = WindowInputs {
            mu: conditioning.mu.view(),
            context,
            noise: &self.x0,
        };
        let latents = solve_window(&mut codec.estimator, self.latent, inputs, self.params.flow)?;
        let audio = codec.decode_latents(&latents)?;
        self.assembler.push(&audio);
        observer(&WindowTrace {
            index: self.next,
            codes,
            conditioning: &conditioning,
            latents: &latents,
            audio: &audio,
        })?;
        self.previous = Some(latents);
        self.next += 1;
        Ok(())
    }

    /// Decodes the windows of the finished sequence `codes` (`[num_quantizers, T]`)
    /// that are not decoded yet (with the looping pad) and returns the rest of the
    /// song (cropped to `int(T / 12.5 · sample_rate)` samples per channel) and
    /// the whole song. The stream is spent afterwards. An error from
    /// `observer` (called after each window) stops before the next window and
    /// is returned as is ([`CodecError::Stopped`] for a caller's stop).
    pub fn finish(
        &mut self,
        codec: &mut Codec,
        codes: ArrayView2<'_, i64>,
        noise: &mut dyn NoiseSource,
        observer: &mut dyn FnMut(&WindowTrace<'_>) -> Result<()>,
    ) -> Result<(AudioChunk, Audio)> {
        let frames = codes.ncols();
        if frames == 0 {
            return Err(CodecError::Codes("no code frames to decode".into()));
        }
        let plan = WindowPlan::new(frames, self.sample_rate, self.params.tail);
        if plan.starts.len() < self.next {
            return Err(CodecError::Codes(format!(
                "{} windows were decoded early but {frames} code frames make only {}",
                self.next,
                plan.starts.len()
            )));
        }
        for &start in &plan.starts[self.next..] {
            self.decode_window(codec, looped_window(codes, start).view(), noise, observer)?;
        }
        if self.clamped > 0 {
            tracing::warn!(
                clamped = self.clamped,
                "codes >= codebook_size were clamped to the last codebook entry"
            );
        }
        let end = plan.target_len.min(self.assembler.len());
        let last = self.take(end);
        let assembler = std::mem::replace(&mut self.assembler, Assembler::new(2, self.overlap_samples));
        Ok((last, assembler.finish(plan.target_len, self.sample_rate)))
    }

    /// Samples `emitted..end` of every channel as the next chunk.
    fn take(&mut self, end: usize) -> AudioChunk {
        let start = self.emitted.min(end);
        let samples = self.assembler.range(start..end);
        self.emitted = self.emitted.max(end);
        AudioChunk {
            offset: start,
            channels: 2,
            sample_rate: self.sample_rate,
            samples,
        }
    }
}

/// Codes `[start, start + 372)` of the looped sequence (frame `i` = `codes[i % T]`).
pub fn looped_window(codes: ArrayView2<'_, i64>, start: usize) -> Array2<i64> {
    let (q, frames) = codes.dim();
    Array2::from_shape_fn((q, WINDOW_CODES), |(r, i)| codes[[r, (start + i) % frames]])
}
