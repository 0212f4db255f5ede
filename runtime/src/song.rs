//! From tags + lyrics to a waveform: the product pipeline behind `heart-run`.
//!
//! A [`Pipeline`] holds what an [`EngineFolder`] hands out for songs (the
//! runtime never reads a checkpoint). [`Pipeline::generate`] builds the prompt,
//! decodes the frames ([`Decoding`]: plain, or speculative with the folder's
//! draft), and turns the codes into audio with the codec, timing each stage.
//!
//! Seeds: one user seed drives everything. The LM's exponential-race noise uses
//! `seed`, the codec's Gaussian flow noise uses `seed ^ CODEC_SEED_SALT`, so the
//! two streams are independent and the same inputs + seed give the same bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use heart::manifest::{Manifest, Verify};
use heart::prompt::{PromptBuilder, TextTokenizer};
use heart_backend::{OrtRuntime, SessionConfig};
use ndarray::Array2;
use serde::Serialize;

use crate::codec::{Audio, Codec, CodecError, DetokenizeParams, FlowParams, SeededNoise as FlowNoise};
use crate::engine::{EngineError, EngineFolder};
use crate::lm::embed::Prompt as LmPrompt;
use crate::lm::frame_loop::{GenParams, StopReason};
use crate::lm::model::HeartMula;
use crate::lm::sampler::{SamplerParams, SeededNoise as RaceNoise};
use crate::lm::speculative::SpecStats;
use crate::lm::{Decoding, Engines, LmError, decode};
use crate::settings::Settings;

/// Mixed into the seed of the codec's noise stream.
pub const CODEC_SEED_SALT: u64 = 0x6865_6172_7463_6f64; // "heartcod"

/// Errors of the song pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SongError {
    /// The engine folder or one of its parts could not be opened.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The tags or lyrics could not be made into a prompt.
    #[error("building the prompt: {0}")]
    Prompt(#[from] heart::Error),
    /// The request does not fit the model (context length, settings).
    #[error("{0}")]
    Request(String),
    /// The LM failed while decoding frames.
    #[error("generating frames: {0}")]
    Lm(#[from] LmError),
    /// The codec failed while making audio.
    #[error("decoding audio: {0}")]
    Codec(#[from] CodecError),
}

/// The parts of an engine folder a song needs, opened once and reused for
/// every request.
pub struct Pipeline {
    folder: EngineFolder,
    tokenizer: TextTokenizer,
    lm: HeartMula,
    draft: Option<HeartMula>,
    codec: Codec,
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct SongRequest {
    /// Tags text (lower-cased and wrapped in `<tag>` by the prompt builder).
    pub tags: String,
    /// Lyrics text.
    pub lyrics: String,
    /// Resolved settings.
    pub settings: Settings,
    /// The seed of every random draw.
    pub seed: u64,
}

/// Progress reported while generating.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// The frame loop produced `frames` of at most `max_frames`.
    Frame {
        /// Frames so far.
        frames: usize,
        /// The most frames this request can produce.
        max_frames: usize,
    },
    /// The LM is done; the codec starts.
    CodecStart {
        /// Codec windows to decode.
        windows: usize,
    },
    /// One codec window was decoded.
    Window {
        /// Windows decoded so far.
        done: usize,
    },
}

/// Wall time of each stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    /// Prompt tokenization and building.
    #[serde(serialize_with = "secs")]
    pub prompt: Duration,
    /// The frame loop (prefill included).
    #[serde(serialize_with = "secs")]
    pub lm: Duration,
    /// RVQ, flow matching, CNN decode, assembly.
    #[serde(serialize_with = "secs")]
    pub codec: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A generated song.
#[derive(Debug)]
pub struct Song {
    /// Stereo audio.
    pub audio: Audio,
    /// Frames generated (12.5 per second of audio).
    pub frames: usize,
    /// Prompt length in backbone positions.
    pub prompt_len: usize,
    /// Why the frame loop ended.
    pub stop: StopReason,
    /// Per-stage wall time.
    pub times: StageTimes,
    /// Speculative-decoding counters, when the song was drafted (`--speculate K`).
    pub speculation: Option<SpecStats>,
}

impl Pipeline {
    /// Opens `dir` through its manifest ([`EngineFolder::open`]) with its
    /// tokenizer, LM and codec.
    pub fn open(rt: &OrtRuntime, dir: &Path, verify: Verify) -> Result<Self, SongError> {
        Self::open_inner(rt, dir, verify, false)
    }

    /// As [`Pipeline::open`], and also loads the speculative-decoding draft,
    /// which [`SongRequest`]s with `settings.speculate > 0` need.
    pub fn open_speculative(rt: &OrtRuntime, dir: &Path, verify: Verify) -> Result<Self, SongError> {
        Self::open_inner(rt, dir, verify, true)
    }

    fn open_inner(rt: &OrtRuntime, dir: &Path, verify: Verify, with_draft: bool) -> Result<Self, SongError> {
        let folder = EngineFolder::open(rt, dir, verify)?;
        let sessions = SessionConfig::default();
        let tokenizer = folder.tokenizer()?;
        let lm = folder.lm(&sessions)?;
        let draft = if with_draft {
            Some(folder.draft(&sessions)?)
        } else {
            None
        };
        let codec = folder.codec()?;
        Ok(Self {
            folder,
            tokenizer,
            lm,
            draft,
            codec,
        })
    }

    /// The engine folder.
    pub fn dir(&self) -> &Path {
        self.folder.dir()
    }

    /// The manifest it was opened through.
    pub fn manifest(&self) -> &Manifest {
        self.folder.manifest()
    }

    /// Generates a song, reporting progress to `progress`.
    pub fn generate(&mut self, req: &SongRequest, progress: &mut dyn FnMut(Progress)) -> Result<Song, SongError> {
        let manifest = self.folder.manifest();
        let s = req.settings;
        let t0 = Instant::now();
        let builder = PromptBuilder::new(&self.tokenizer, manifest.gen_config, manifest.model.audio_num_codebooks);
        let prompt = builder.build(&req.tags, &req.lyrics, s.cfg_scale)?;
        check_context(
            prompt.prompt_len(),
            s.max_audio_frames(),
            manifest.model.backbone.max_seq_len,
        )
        .map_err(SongError::Request)?;
        let lm_prompt = LmPrompt::from_text(&prompt.text_ids(), prompt.muq_idx());
        let prompt_time = t0.elapsed();

        let t1 = Instant::now();
        let params = GenParams {
            cfg_scale: s.cfg_scale,
            max_audio_length_ms: (f64::from(s.duration) * 1000.0).round() as u64,
        };
        let sampler = SamplerParams {
            temperature: s.temperature,
            top_k: s.topk,
        };
        let engines = Engines {
            target: &mut self.lm,
            draft: self.draft.as_mut(),
        };
        let decoded = decode(
            Decoding::from_draft_frames(s.speculate),
            engines,
            &lm_prompt,
            params,
            sampler,
            &mut RaceNoise::new(req.seed),
            &mut |frames, max_frames| progress(Progress::Frame { frames, max_frames }),
        )?;
        let (generation, speculation) = (decoded.generation, decoded.speculation);
        let lm_time = t1.elapsed();

        let t2 = Instant::now();
        let codes = generation.codes_by_codebook();
        let frames = generation.frames.len();
        let codes = Array2::from_shape_vec((codes.len(), frames), codes.into_iter().flatten().collect())
            .map_err(|e| SongError::Request(format!("arranging codes for the codec: {e}")))?;
        let flow = FlowParams {
            num_steps: s.flow_steps,
            guidance: s.codec_guidance,
        };
        let detok = DetokenizeParams {
            flow,
            ..Default::default()
        };
        progress(Progress::CodecStart {
            windows: crate::codec::WindowPlan::new(frames, self.codec.config().sample_rate, detok.tail)
                .starts
                .len(),
        });
        let mut flow_noise = FlowNoise::new(req.seed ^ CODEC_SEED_SALT);
        let mut done = 0usize;
        let audio = self
            .codec
            .detokenize_observed(codes.view(), detok, &mut flow_noise, &mut |_| {
                done += 1;
                progress(Progress::Window { done });
            })?;
        Ok(Song {
            audio,
            frames,
            prompt_len: prompt.prompt_len(),
            stop: generation.stop,
            times: StageTimes {
                prompt: prompt_time,
                lm: lm_time,
                codec: t2.elapsed(),
            },
            speculation,
        })
    }
}

/// The backbone's context must hold the prompt plus every fed-back frame
/// (`prompt_len + max_frames` positions); says by how much it does not.
pub fn check_context(prompt_len: usize, max_frames: usize, context: usize) -> Result<(), String> {
    if prompt_len >= context {
        return Err(format!(
            "the tags + lyrics take {prompt_len} positions but the model's context is {context}: shorten them by at \
             least {} tokens",
            prompt_len - context + 1
        ));
    }
    if prompt_len + max_frames > context {
        let fit = context - prompt_len;
        return Err(format!(
            "--duration needs {max_frames} frames after the {prompt_len}-position prompt, but the model's context is \
             {context}: at most {:.2} s fit with this prompt (or shorten the lyrics by {} tokens)",
            heart::geometry::seconds_of_frames(fit),
            prompt_len + max_frames - context
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_context;

    #[test]
    fn context_errors_say_by_how_much() {
        assert!(check_context(100, 400, 512).is_ok());
        assert!(check_context(100, 412, 512).is_ok());
        let e = check_context(600, 10, 512).unwrap_err();
        assert!(
            e.contains("take 600 positions") && e.contains("by at least 89 tokens"),
            "{e}"
        );
        let e = check_context(100, 500, 512).unwrap_err();
        assert!(e.contains("at most 32.96 s") && e.contains("by 88 tokens"), "{e}");
    }
}
