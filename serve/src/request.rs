//! `POST /v1/songs` bodies: parsed strictly, bounded, and validated with the
//! rules and messages of `heart-run` (settings through
//! [`SettingsArgs::resolve`], the context through
//! [`heart_runtime::song::check_context`]) before the song is queued, so a
//! bad request is a `400` with the message, never a failed job.

use heart::config::GenConfig;
use heart::prompt::{PromptBuilder, TextTokenizer};
use heart_runtime::settings::SettingsArgs;
use serde::Deserialize;

use crate::jobs::SongSpec;

/// Largest tags text accepted, in bytes (upstream's tag lists are a few dozen).
pub const MAX_TAGS_BYTES: usize = 1024;
/// Largest lyrics text accepted, in bytes (a long song's lyrics are ~4 KB;
/// the model's context bounds them further).
pub const MAX_LYRICS_BYTES: usize = 32 * 1024;
/// Seeds the service draws are below 2^53, so a browser's JSON numbers hold
/// them exactly and a user can type one back.
pub const DRAWN_SEED_LIMIT: u64 = 1 << 53;

/// A song request as a client sends it. The settings keys are `heart-run`'s
/// flag names with `_` for `-`; unknown keys are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SongBody {
    /// Tags, e.g. `piano,happy`.
    pub tags: String,
    /// Lyrics with section markers.
    #[serde(default)]
    pub lyrics: String,
    /// A preset the service offers (`speed`, `quality`); keys given here override it.
    pub preset: Option<String>,
    /// Seed; drawn at random when absent.
    pub seed: Option<u64>,
    /// Maximum song length in seconds.
    pub duration: Option<f32>,
    /// LM guidance scale.
    pub cfg_scale: Option<f32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Top-k.
    pub topk: Option<usize>,
    /// Codec Euler steps.
    pub flow_steps: Option<usize>,
    /// Codec guidance.
    pub codec_guidance: Option<f32>,
    /// Frames drafted per speculative round (0 = off).
    pub speculate: Option<usize>,
}

/// What validation needs to know about the engine.
pub struct Rules<'a> {
    /// The folder's tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// The folder's generation ids.
    pub gen_config: GenConfig,
    /// Audio codebooks of the model.
    pub codebooks: usize,
    /// Backbone positions (prompt + frames).
    pub context: usize,
    /// Whether the folder has a speculative draft.
    pub has_draft: bool,
    /// The presets offered, by name.
    pub presets: &'a [(String, SettingsArgs)],
}

impl SongBody {
    /// The song to queue, or the message of a `400`.
    pub fn validate(self, rules: &Rules<'_>) -> Result<SongSpec, String> {
        if self.tags.len() > MAX_TAGS_BYTES {
            return Err(format!(
                "tags: {} bytes, at most {MAX_TAGS_BYTES} are accepted",
                self.tags.len()
            ));
        }
        if self.lyrics.len() > MAX_LYRICS_BYTES {
            return Err(format!(
                "lyrics: {} bytes, at most {MAX_LYRICS_BYTES} are accepted",
                self.lyrics.len()
            ));
        }
        let preset = match &self.preset {
            None => SettingsArgs::default(),
            Some(name) => match rules.presets.iter().find(|(n, _)| n == name) {
                Some((_, p)) => p.clone(),
                None => {
                    let names: Vec<&str> = rules.presets.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(format!(
                        "preset {name:?}: unknown; this service offers {}",
                        names.join(", ")
                    ));
                }
            },
        };
        let flags = SettingsArgs {
            duration: self.duration,
            cfg_scale: self.cfg_scale,
            temperature: self.temperature,
            topk: self.topk,
            flow_steps: self.flow_steps,
            codec_guidance: self.codec_guidance,
            speculate: self.speculate,
        };
        let settings = flags.resolve(&preset).map_err(|e| e.to_string())?;
        if settings.speculate > 0 && !rules.has_draft {
            return Err(format!(
                "--speculate {}: this service's engine folder has no speculative draft; use speculate 0",
                settings.speculate
            ));
        }
        let prompt = PromptBuilder::new(rules.tokenizer, rules.gen_config, rules.codebooks)
            .build(&self.tags, &self.lyrics, settings.cfg_scale)
            .map_err(|e| format!("building the prompt: {e}"))?;
        heart_runtime::song::check_context(prompt.prompt_len(), settings.max_audio_frames(), rules.context)?;
        Ok(SongSpec {
            tags: self.tags,
            lyrics: self.lyrics,
            preset: self.preset,
            settings,
            seed: self.seed.unwrap_or_else(|| rand::random::<u64>() % DRAWN_SEED_LIMIT),
        })
    }
}
