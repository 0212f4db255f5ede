//! From tags + lyrics to a waveform: the product pipeline behind `heart-run`.
//!
//! An [`Engine`] is an engine folder opened through its manifest (the runtime
//! never reads a checkpoint). [`Engine::generate`] builds the prompt, runs the
//! frame loop, and decodes the codes with the codec, timing each stage.
//!
//! Seeds: one user seed drives everything. The LM's exponential-race noise uses
//! `seed`, the codec's Gaussian flow noise uses `seed ^ CODEC_SEED_SALT`, so the
//! two streams are independent and the same inputs + seed give the same bytes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use heart::manifest::{EngineKind, Manifest, Verify};
use heart::prompt::{PromptBuilder, TextTokenizer};
use ndarray::Array2;
use serde::Serialize;

use crate::codec::{Audio, Codec, DetokenizeParams, FlowParams, SeededNoise as FlowNoise};
use crate::lm::embed::Prompt as LmPrompt;
use crate::lm::frame_loop::{FrameEvent, GenParams, Generation, Sampling, StopReason, generate};
use crate::lm::model::HeartMula;
use crate::lm::sampler::{SamplerParams, SeededNoise as RaceNoise};
use crate::lm::session::SessionConfig;
use crate::lm::speculative::{SpecEvent, SpecParams, SpecStats, generate_speculative};
use crate::ort_env::OrtRuntime;
use crate::settings::Settings;

/// Mixed into the seed of the codec's noise stream.
pub const CODEC_SEED_SALT: u64 = 0x6865_6172_7463_6f64; // "heartcod"

/// An engine folder, opened.
pub struct Engine {
    dir: PathBuf,
    manifest: Manifest,
    tokenizer: TextTokenizer,
    lm: HeartMula,
    draft: Option<HeartMula>,
    codec: Option<Codec>,
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

impl Engine {
    /// Opens `dir` through its manifest; every file is checked for size and the
    /// small ones for their SHA-256 ([`Verify::Quick`]) unless `verify` says more.
    pub fn open(rt: &OrtRuntime, dir: &Path, verify: Verify) -> Result<Self> {
        Self::open_inner(rt, dir, verify, false)
    }

    /// As [`Engine::open`], and also loads the speculative-decoding draft
    /// (`draft/`, written by `heart-build --draft-precision` or
    /// `--draft-backbone-layers`), which [`SongRequest`]s with
    /// `settings.speculate > 0` need.
    pub fn open_speculative(rt: &OrtRuntime, dir: &Path, verify: Verify) -> Result<Self> {
        Self::open_inner(rt, dir, verify, true)
    }

    fn open_inner(rt: &OrtRuntime, dir: &Path, verify: Verify, with_draft: bool) -> Result<Self> {
        // Every error of `Manifest::load` names the folder or the file at fault.
        let manifest = Manifest::load(dir, verify)?;
        let draft = with_draft && manifest.file(EngineKind::DraftBackbone).is_some();
        manifest.require_files(dir, &heart::engine::runtime_files(manifest.codec.is_some(), draft))?;
        let rt = &crate::backend::for_engine(rt, dir, &manifest)?;
        let tokenizer = TextTokenizer::from_file(&manifest.path_of(dir, EngineKind::Tokenizer)?)?;
        let lm = HeartMula::open(
            rt,
            dir,
            &manifest.model,
            &manifest.gen_config,
            &SessionConfig::default(),
        )
        .with_context(|| format!("loading the LM engines of {}", dir.display()))?;
        let draft = if with_draft {
            if manifest.file(EngineKind::DraftBackbone).is_none() {
                bail!(
                    "engine folder {} has no speculative draft: rebuild it with `heart-build … --draft-precision \
                     int4` (or --draft-backbone-layers N), or run without --speculate",
                    dir.display()
                );
            }
            let draft = HeartMula::open_draft(
                rt,
                dir,
                &manifest.model,
                &manifest.gen_config,
                &SessionConfig::default(),
            )
            .with_context(|| format!("loading the draft engines of {}", dir.display()))?;
            Some(draft)
        } else {
            None
        };
        let codec = match &manifest.codec {
            Some(cfg) => Some(
                Codec::open_with_config(rt, dir, cfg.clone())
                    .with_context(|| format!("loading the codec engines of {}", dir.display()))?,
            ),
            None => None,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            tokenizer,
            lm,
            draft,
            codec,
        })
    }

    /// The engine folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest it was opened through.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Generates a song, reporting progress to `progress`.
    pub fn generate(&mut self, req: &SongRequest, progress: &mut dyn FnMut(Progress)) -> Result<Song> {
        let Some(codec) = self.codec.as_mut() else {
            bail!(
                "engine folder {} has no codec (it was built without --codec), so it cannot make audio",
                self.dir.display()
            );
        };
        let s = req.settings;
        let t0 = Instant::now();
        let builder = PromptBuilder::new(
            &self.tokenizer,
            self.manifest.gen_config,
            self.manifest.model.audio_num_codebooks,
        );
        let prompt = builder.build(&req.tags, &req.lyrics, s.cfg_scale)?;
        check_context(
            prompt.prompt_len(),
            s.max_audio_frames(),
            self.manifest.model.backbone.max_seq_len,
        )
        .map_err(anyhow::Error::msg)?;
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
        let models = Models {
            lm: &mut self.lm,
            draft: self.draft.as_mut(),
            dir: &self.dir,
        };
        let (generation, speculation) = models.run(
            &lm_prompt,
            params,
            sampler,
            s.speculate,
            req.seed,
            &mut |frames, max_frames| progress(Progress::Frame { frames, max_frames }),
        )?;
        let lm_time = t1.elapsed();

        let t2 = Instant::now();
        let codes = generation.codes_by_codebook();
        let frames = generation.frames.len();
        let codes = Array2::from_shape_vec((codes.len(), frames), codes.into_iter().flatten().collect())
            .context("arranging codes for the codec")?;
        let flow = FlowParams {
            num_steps: s.flow_steps,
            guidance: s.codec_guidance,
        };
        let detok = DetokenizeParams {
            flow,
            ..Default::default()
        };
        progress(Progress::CodecStart {
            windows: crate::codec::WindowPlan::new(frames, codec.config().sample_rate, detok.tail)
                .starts
                .len(),
        });
        let mut flow_noise = FlowNoise::new(req.seed ^ CODEC_SEED_SALT);
        let mut done = 0usize;
        let audio = codec.detokenize_observed(codes.view(), detok, &mut flow_noise, &mut |_| {
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

/// The LM engines of an [`Engine`], borrowed apart from its codec.
struct Models<'a> {
    lm: &'a mut HeartMula,
    draft: Option<&'a mut HeartMula>,
    dir: &'a Path,
}

impl Models<'_> {
    /// The frame loop: plain, or speculative with `draft_frames` per round.
    /// `kept(frames, max_frames)` is called for every kept frame.
    fn run(
        self,
        prompt: &LmPrompt,
        generation: GenParams,
        sampler: SamplerParams,
        draft_frames: usize,
        seed: u64,
        kept: &mut dyn FnMut(usize, usize),
    ) -> Result<(Generation, Option<SpecStats>)> {
        let mut noise = RaceNoise::new(seed);
        let mut count = 0usize;
        if draft_frames == 0 {
            let mut picker = Sampling {
                params: sampler,
                noise: &mut noise,
            };
            let out = generate(self.lm, prompt, &generation, &mut picker, &mut |e: &FrameEvent<'_>| {
                if e.kept {
                    count += 1;
                    kept(count, e.max_frames);
                }
            })?;
            return Ok((out, None));
        }
        let Some(draft) = self.draft else {
            bail!(
                "speculative decoding needs the draft engines: open {} with Engine::open_speculative",
                self.dir.display()
            );
        };
        let params = SpecParams {
            generation,
            sampler,
            draft_frames,
        };
        let out = generate_speculative(self.lm, draft, prompt, &params, &mut noise, &mut |e: &SpecEvent<'_>| {
            if e.kept {
                count += 1;
                kept(count, e.max_frames);
            }
        })?;
        Ok((out.generation, Some(out.stats)))
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
            fit as f64 * 0.08,
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
