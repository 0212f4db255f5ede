//! The real engines behind the bench drivers: [`LmStepper`] drives a
//! [`HeartMula`] frame by frame as generation does (embedding, backbone with its
//! cache, CFG mix and sampling of every codebook, decoder calls), and
//! [`CodecBench`] runs the flow estimator and the scalar decoder on one
//! full-size window.
//!
//! Values are synthetic (placeholder text rows fill the cache up to the measured
//! position; codes come from the sampler on the engine's own logits), which does
//! not change the work a step does.

use heart_runtime::codec::{Codec, CodecError};
use heart_runtime::lm::frame_graph::frame_step;
use heart_runtime::lm::frame_loop::pick_guided;
use heart_runtime::lm::sampler::{NoiseSource, SamplerParams, SeededNoise};
use heart_runtime::lm::{GenParams, HeartMula, LmError, LmState, Prompt, Sampling};

use super::drive::{CodecStepper, FrameStepper};

/// Drives a [`HeartMula`] engine for [`super::drive::bench_lm`].
pub struct LmStepper<'a> {
    lm: &'a mut HeartMula,
    generation: GenParams,
    sampler: SamplerParams,
    capacity: usize,
    state: Option<LmState>,
    frame: Vec<Vec<i64>>,
    hidden: Vec<f32>,
    c0: Vec<i64>,
    noise: SeededNoise,
}

impl<'a> LmStepper<'a> {
    /// A stepper that guides and samples as `generation` and `sampler` say
    /// (batch 2 when `generation.cfg_scale > 1`, as generation runs), with
    /// caches of up to `capacity` positions and sampling noise from `seed`.
    pub fn new(
        lm: &'a mut HeartMula,
        generation: GenParams,
        sampler: SamplerParams,
        capacity: usize,
        seed: u64,
    ) -> Self {
        let codebooks = lm.dims().codebooks;
        Self {
            frame: vec![vec![0; codebooks]; generation.batch()],
            lm,
            generation,
            sampler,
            capacity,
            state: None,
            hidden: Vec::new(),
            c0: Vec::new(),
            noise: SeededNoise::new(seed),
        }
    }

    fn fresh_state(&mut self, positions: usize) -> Result<&mut LmState, LmError> {
        let mut st = self.lm.new_state(self.generation.batch(), self.capacity)?;
        if positions > 0 {
            self.lm.prefill(&mut st, &Prompt::from_text(&vec![1; positions], 0))?;
        }
        Ok(self.state.insert(st))
    }
}

impl FrameStepper for LmStepper<'_> {
    type Error = LmError;

    fn prefill(&mut self, tokens: usize) -> Result<(), LmError> {
        self.fresh_state(tokens).map(|_| ())
    }

    fn reset(&mut self, position: usize) -> Result<(), LmError> {
        self.fresh_state(position).map(|_| ())
    }

    fn backbone_step(&mut self) -> Result<(), LmError> {
        let st = self
            .state
            .as_mut()
            .ok_or_else(|| LmError::Input("reset before stepping".into()))?;
        let out = self.lm.feed_frame(st, &self.frame)?;
        let vocab = self.lm.dims().audio_vocab;
        let mut picker = Sampling {
            params: self.sampler,
            noise: &mut self.noise,
        };
        self.c0 = pick_guided(&self.generation, &mut picker, 0, 0, &out.c0_logits, vocab)?.0;
        self.hidden = out.hidden;
        Ok(())
    }

    fn decoder_frame(&mut self) -> Result<(), LmError> {
        let mut st = self
            .state
            .take()
            .ok_or_else(|| LmError::Input("reset before stepping".into()))?;
        let (hidden, c0) = (std::mem::take(&mut self.hidden), std::mem::take(&mut self.c0));
        let vocab = self.lm.dims().audio_vocab;
        let generation = self.generation;
        let mut picker = Sampling {
            params: self.sampler,
            noise: &mut self.noise,
        };
        let result = self.lm.decode_frame(&mut st, &hidden, &c0, &mut |k, logits| {
            Ok(pick_guided(&generation, &mut picker, 0, k, logits, vocab)?.0)
        });
        self.state = Some(st);
        let codes = result?;
        for (row, c) in self.frame.iter_mut().zip(codes) {
            *row = c;
        }
        Ok(())
    }

    fn calls_per_frame(&self) -> (usize, Option<usize>) {
        let per_step = self.lm.dims().codebooks;
        (per_step, self.lm.has_frame_graph().then_some(1))
    }

    fn whole_frame(&mut self) -> Result<(), LmError> {
        let st = self
            .state
            .as_mut()
            .ok_or_else(|| LmError::Input("reset before stepping".into()))?;
        let dims = self.lm.dims();
        let embeds = self.lm.embedder().frame(&self.frame, dims.empty_id)?;
        let mut q = vec![0f32; dims.codebooks * dims.audio_vocab];
        for row in q.chunks_exact_mut(dims.audio_vocab) {
            self.noise.fill_exponential(row)?;
        }
        let codes = frame_step(self.lm, st, (&embeds, 1), &q, &self.generation, self.sampler)?;
        for row in &mut self.frame {
            row.clone_from(&codes);
        }
        Ok(())
    }
}

/// Drives a [`Codec`] engine for [`super::drive::bench_codec`] on one window of
/// `frames` latent frames.
pub struct CodecBench<'a> {
    codec: &'a mut Codec,
    frames: usize,
    input: Vec<f32>,
    timesteps: Vec<f32>,
    latents: Vec<f32>,
}

impl<'a> CodecBench<'a> {
    /// Inputs for a window of `frames` latent frames with guidance (batch 2).
    pub fn new(codec: &'a mut Codec, frames: usize) -> Self {
        let cfg = codec.config();
        let (channels, latent) = (cfg.in_channels, cfg.out_channels);
        let input = (0..2 * frames * channels)
            .map(|i| ((i % 97) as f32 / 97.0) - 0.5)
            .collect();
        let latents = (0..frames * latent).map(|i| ((i % 89) as f32 / 89.0) - 0.5).collect();
        Self {
            codec,
            frames,
            input,
            timesteps: vec![0.5, 0.5],
            latents,
        }
    }
}

impl CodecStepper for CodecBench<'_> {
    type Error = CodecError;

    fn estimator_step(&mut self) -> Result<(), CodecError> {
        self.codec
            .estimator()
            .velocity(&self.input, self.frames, &self.timesteps)
            .map(|_| ())
    }

    fn decode_window(&mut self) -> Result<(), CodecError> {
        self.codec.decode_latents(&self.latents).map(|_| ())
    }
}
