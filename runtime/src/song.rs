//! From tags + lyrics to a waveform: the product pipeline behind `heart-run`.
//!
//! A [`Pipeline`] holds what an [`EngineFolder`] hands out for songs (the
//! runtime never reads a checkpoint). [`Pipeline::generate`] builds the prompt,
//! decodes the frames ([`Decoding`]: plain, or speculative with the folder's
//! draft), and turns the codes into audio with the codec, timing each stage.
//!
//! Pipelined: the codec decodes window `w` as soon as its 372 code frames
//! exist ([`WindowStream`]: same audio as decoding the finished codes), and
//! [`Pipeline::generate_streaming`] hands each finished run of samples to a
//! sink while the LM goes on. The LM and the codec take turns on the calling
//! thread (the LM waits while a window decodes): on the CPU both stages keep
//! every core busy (the LM's steps are bandwidth-bound GEMVs on all intra-op
//! threads, the estimator runs at about half the fp32 peak), so a second
//! thread would only split the same cores, and the output callbacks stay on
//! the caller's thread. Time to first audio is the LM's first 372 frames
//! (29.76 s of audio) plus one window; a song shorter than that streams when
//! the LM stops.
//!
//! Seeds: one user seed drives everything. The LM's exponential-race noise uses
//! `seed`, the codec's Gaussian flow noise uses `seed ^ CODEC_SEED_SALT`, so the
//! two streams are independent and the same inputs + seed give the same bytes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use heart::manifest::{Manifest, Verify};
use heart::prompt::{PromptBuilder, TextTokenizer};
use heart_backend::{OrtRuntime, SessionConfig};
use ndarray::Array2;
use serde::Serialize;

use crate::codec::{
    Audio, AudioChunk, Codec, CodecError, DetokenizeParams, FlowParams, SeededNoise as FlowNoise, WindowPlan,
    WindowStream,
};
use crate::engine::{EngineError, EngineFolder};
use crate::lm::embed::Prompt as LmPrompt;
use crate::lm::frame_loop::{GenParams, StopReason};
use crate::lm::model::HeartMula;
use crate::lm::sampler::{SamplerParams, SeededNoise as RaceNoise};
use crate::lm::speculative::SpecStats;
use crate::lm::{Decoding, Engines, KeptFrame, LmError, decode};
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
    /// The sink of [`Pipeline::generate_streaming`] refused a chunk (e.g. the
    /// reader of a pipe went away); generation stopped there.
    #[error("writing audio: {0}")]
    Output(#[source] std::io::Error),
    /// The caller's cancel flag of [`Pipeline::generate_cancellable`] was set;
    /// generation stopped at the next frame or codec window.
    #[error("cancelled")]
    Cancelled,
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
    /// The LM is done: the song has `windows` codec windows in all
    /// (`done` of them decoded while the LM ran).
    CodecStart {
        /// Codec windows of the song.
        windows: usize,
        /// Windows already decoded.
        done: usize,
    },
    /// One codec window was decoded (while the LM runs, or after it).
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
    /// The frame loop (prefill included), without the codec windows decoded
    /// between its frames.
    #[serde(serialize_with = "secs")]
    pub lm: Duration,
    /// RVQ, flow matching, CNN decode, assembly: every window, during and
    /// after the frame loop.
    #[serde(serialize_with = "secs")]
    pub codec: Duration,
    /// Time to first audio: from the start of [`Pipeline::generate`] to the
    /// first non-empty chunk handed to the sink.
    #[serde(serialize_with = "secs")]
    pub first_audio: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A generated song.
#[derive(Debug)]
pub struct Song {
    /// Stereo audio (all of it, also when it was streamed).
    pub audio: Audio,
    /// The codes, `[codebooks, frames]` (the codec's layout).
    pub codes: Array2<i64>,
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

    /// As [`Pipeline::open`], and also loads the draft when the folder has
    /// one: for a caller that learns `settings.speculate` only per request.
    pub fn open_with_draft_if_any(rt: &OrtRuntime, dir: &Path, verify: Verify) -> Result<Self, SongError> {
        let folder = EngineFolder::open(rt, dir, verify)?;
        let with_draft = folder.has_draft();
        Self::from_folder(folder, with_draft)
    }

    fn open_inner(rt: &OrtRuntime, dir: &Path, verify: Verify, with_draft: bool) -> Result<Self, SongError> {
        Self::from_folder(EngineFolder::open(rt, dir, verify)?, with_draft)
    }

    fn from_folder(folder: EngineFolder, with_draft: bool) -> Result<Self, SongError> {
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

    /// Samples per second of the songs' audio.
    pub fn sample_rate(&self) -> u32 {
        self.codec.config().sample_rate
    }

    /// Channels of the songs' audio.
    pub fn channels(&self) -> u16 {
        2
    }

    /// The LM's frame loop: device-resident on a GPU backend of a build with
    /// the `gpu` feature, else on the host.
    pub fn lm_loop(&self) -> crate::lm::device::LoopKind {
        self.lm.loop_kind()
    }

    /// The folder's text tokenizer, as the pipeline builds prompts with it.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Whether the speculative draft is loaded, i.e. requests with
    /// `settings.speculate > 0` can run.
    pub fn has_draft(&self) -> bool {
        self.draft.is_some()
    }

    /// The manifest it was opened through.
    pub fn manifest(&self) -> &Manifest {
        self.folder.manifest()
    }

    /// Generates a song, reporting progress to `progress`.
    pub fn generate(&mut self, req: &SongRequest, progress: &mut dyn FnMut(Progress)) -> Result<Song, SongError> {
        self.generate_streaming(req, progress, &mut |_| Ok(()))
    }

    /// [`Pipeline::generate`], handing the audio to `sink` as it is made.
    ///
    /// Contract: `sink` is called on the calling thread with chunks in order
    /// whose `offset`s tile the song from sample 0 (the concatenation is
    /// `Song::audio`, bit for bit); the first chunk comes after window 0
    /// (372 frames) or when the LM stops, whichever is first, the last when
    /// the codec is done. An error from `sink` stops generation and is
    /// returned as [`SongError::Output`]; `progress` calls interleave with the
    /// chunks.
    pub fn generate_streaming(
        &mut self,
        req: &SongRequest,
        progress: &mut dyn FnMut(Progress),
        sink: &mut dyn FnMut(&AudioChunk) -> std::io::Result<()>,
    ) -> Result<Song, SongError> {
        self.generate_cancellable(req, progress, sink, &AtomicBool::new(false))
    }

    /// [`Pipeline::generate_streaming`] that another thread can stop: once
    /// `cancel` is set, generation ends with [`SongError::Cancelled`] before
    /// the next LM frame (while the LM runs) or the next codec window (after
    /// it), so the wait is at most one frame or one window; the sink gets no
    /// chunk after that.
    pub fn generate_cancellable(
        &mut self,
        req: &SongRequest,
        progress: &mut dyn FnMut(Progress),
        sink: &mut dyn FnMut(&AudioChunk) -> std::io::Result<()>,
        cancel: &AtomicBool,
    ) -> Result<Song, SongError> {
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
        let detok = DetokenizeParams {
            flow: FlowParams {
                num_steps: s.flow_steps,
                guidance: s.codec_guidance,
            },
            ..Default::default()
        };
        let stream = WindowStream::new(self.codec.config(), detok);
        let mut out = Output {
            codec: &mut self.codec,
            stream,
            noise: FlowNoise::new(req.seed ^ CODEC_SEED_SALT),
            frames: Vec::new(),
            codec_time: Duration::ZERO,
            first_audio: None,
            start: t0,
            failure: None,
            sink,
        };
        let decoded = decode(
            Decoding::from_draft_frames(s.speculate),
            engines,
            &lm_prompt,
            params,
            sampler,
            &mut RaceNoise::new(req.seed),
            &mut |kept: KeptFrame<'_>| {
                if cancel.load(Ordering::Relaxed) {
                    out.failure = Some(SongError::Cancelled);
                    return Err(LmError::Stopped);
                }
                progress(Progress::Frame {
                    frames: kept.frames,
                    max_frames: kept.max_frames,
                });
                out.frames.push(kept.codes.to_vec());
                out.window_if_ready(progress)
            },
        );
        let decoded = match (decoded, out.failure.take()) {
            (_, Some(failure)) => return Err(failure),
            (result, None) => result?,
        };
        let (generation, speculation) = (decoded.generation, decoded.speculation);
        let lm_time = t1.elapsed() - out.codec_time;

        let frames = generation.frames.len();
        let codes = generation.codes_by_codebook();
        let codes = Array2::from_shape_vec((codes.len(), frames), codes.into_iter().flatten().collect())
            .map_err(|e| SongError::Request(format!("arranging codes for the codec: {e}")))?;
        progress(Progress::CodecStart {
            windows: WindowPlan::new(frames, out.codec.config().sample_rate, detok.tail)
                .starts
                .len(),
            done: out.stream.windows_done(),
        });
        let t2 = Instant::now();
        let mut done = out.stream.windows_done();
        let finished = out
            .stream
            .finish(&mut *out.codec, codes.view(), &mut out.noise, &mut |_| {
                done += 1;
                progress(Progress::Window { done });
                if cancel.load(Ordering::Relaxed) {
                    return Err(CodecError::Stopped);
                }
                Ok(())
            });
        let (last, audio) = match finished {
            Err(CodecError::Stopped) => return Err(SongError::Cancelled),
            other => other?,
        };
        out.codec_time += t2.elapsed();
        let codec_time = out.codec_time;
        let first_audio = out.emit(&last)?;
        Ok(Song {
            audio,
            codes,
            frames,
            prompt_len: prompt.prompt_len(),
            stop: generation.stop,
            times: StageTimes {
                prompt: prompt_time,
                lm: lm_time,
                codec: codec_time,
                first_audio,
            },
            speculation,
        })
    }
}

/// The codec side of a song in progress: the frames so far, the window
/// stream and where its audio goes.
struct Output<'a, 's> {
    codec: &'a mut Codec,
    stream: WindowStream,
    noise: FlowNoise,
    /// Kept frames so far, `[frames][codebooks]`.
    frames: Vec<Vec<i64>>,
    codec_time: Duration,
    first_audio: Option<Duration>,
    start: Instant,
    /// Why the frame loop was stopped ([`LmError::Stopped`]).
    failure: Option<SongError>,
    sink: &'s mut dyn FnMut(&AudioChunk) -> std::io::Result<()>,
}

impl Output<'_, '_> {
    /// Decodes the next window once its codes exist and emits its audio; a
    /// failure is kept for the caller and stops the frame loop.
    fn window_if_ready(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<(), LmError> {
        if self.frames.len() < self.stream.frames_for_next() {
            return Ok(());
        }
        let t = Instant::now();
        let start = self.stream.next_start();
        let window = &self.frames[start..self.stream.frames_for_next()];
        let codes = Array2::from_shape_fn((window[0].len(), window.len()), |(q, i)| window[i][q]);
        let chunk = self
            .stream
            .push_window(self.codec, codes.view(), &mut self.noise, &mut |_| Ok(()));
        self.codec_time += t.elapsed();
        let result = chunk
            .map_err(SongError::from)
            .and_then(|chunk| self.emit(&chunk).map(|_| ()));
        match result {
            Ok(()) => {
                progress(Progress::Window {
                    done: self.stream.windows_done(),
                });
                Ok(())
            }
            Err(e) => {
                self.failure = Some(e);
                Err(LmError::Stopped)
            }
        }
    }

    /// Hands `chunk` to the sink; returns the time to first audio so far.
    fn emit(&mut self, chunk: &AudioChunk) -> Result<Duration, SongError> {
        if !chunk.is_empty() {
            (self.sink)(chunk).map_err(SongError::Output)?;
            self.first_audio.get_or_insert_with(|| self.start.elapsed());
        }
        Ok(self.first_audio.unwrap_or_else(|| self.start.elapsed()))
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
