//! Generation settings and run presets.
//!
//! A preset is a TOML file whose keys are the `heart-run` flag names
//! (`configs/speed.toml`, `configs/quality.toml`); `--preset NAME` looks for
//! `configs/NAME.toml`, `--preset FILE` reads a path. Precedence: command-line flag,
//! then preset, then the upstream default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Upstream defaults, by their settings names.
pub mod defaults {
    /// Frames drafted per speculative round for a bare `--speculate`.
    pub use heart::defaults::DRAFT_FRAMES as SPECULATE_K;
    pub use heart::defaults::{CFG_SCALE, CODEC_GUIDANCE, DURATION_S, FLOW_STEPS, TEMPERATURE, TOPK};
}

/// Settings that may come from a flag or a preset; `None` = not given there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct SettingsArgs {
    /// Maximum song length in seconds [default: 240].
    #[cfg_attr(feature = "clap", arg(long, value_name = "SECS"))]
    pub duration: Option<f32>,
    /// Classifier-free guidance scale of the LM; 1.0 disables guidance [default: 1.5].
    #[cfg_attr(feature = "clap", arg(long, value_name = "X"))]
    pub cfg_scale: Option<f32>,
    /// Sampling temperature [default: 1.0].
    #[cfg_attr(feature = "clap", arg(long, value_name = "X"))]
    pub temperature: Option<f32>,
    /// Sample among the K most likely codes (ties at the threshold kept) [default: 50].
    #[cfg_attr(feature = "clap", arg(long, value_name = "K"))]
    pub topk: Option<usize>,
    /// Euler steps of the codec's flow matching; 4-8 trade quality for speed [default: 10].
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub flow_steps: Option<usize>,
    /// Classifier-free guidance of the codec; 1.0 halves its work [default: 1.25].
    #[cfg_attr(feature = "clap", arg(long, value_name = "X"))]
    pub codec_guidance: Option<f32>,
    /// Speculative decoding with the engine's draft: K frames drafted per round
    /// (`--speculate` alone = 4, 0 = off). Same distribution as plain sampling,
    /// other samples for a seed [default: 0].
    #[cfg_attr(feature = "clap", arg(long, value_name = "K", num_args = 0..=1, default_missing_value = "4"))]
    pub speculate: Option<usize>,
}

/// Fully resolved settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Settings {
    /// Maximum song length in seconds.
    pub duration: f32,
    /// LM guidance scale.
    pub cfg_scale: f32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Top-k.
    pub topk: usize,
    /// Codec Euler steps.
    pub flow_steps: usize,
    /// Codec guidance.
    pub codec_guidance: f32,
    /// Frames drafted per speculative round (0 = plain decoding).
    pub speculate: usize,
}

/// Errors of preset loading and validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The preset file could not be read.
    #[error("preset {}: {source}", path.display())]
    Io {
        /// The preset path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The preset is not valid TOML or has unknown keys.
    #[error("preset {}: {message}", path.display())]
    Parse {
        /// The preset path.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range.
    #[error("--{flag} {value}: {expected}")]
    Range {
        /// The flag / preset key.
        flag: &'static str,
        /// The given value.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl SettingsArgs {
    /// Reads a preset: an existing file path, else `<configs_dir>/<name>.toml`.
    pub fn load_preset(name_or_path: &str, configs_dir: &Path) -> Result<Self, SettingsError> {
        let direct = PathBuf::from(name_or_path);
        let path = if direct.is_file() {
            direct
        } else {
            configs_dir.join(format!("{name_or_path}.toml"))
        };
        let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Io {
            path: path.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path,
            message: e.to_string(),
        })
    }

    /// `self` (flags) over `preset` over the upstream defaults, validated.
    pub fn resolve(&self, preset: &SettingsArgs) -> Result<Settings, SettingsError> {
        let s = Settings {
            duration: self.duration.or(preset.duration).unwrap_or(defaults::DURATION_S),
            cfg_scale: self.cfg_scale.or(preset.cfg_scale).unwrap_or(defaults::CFG_SCALE),
            temperature: self.temperature.or(preset.temperature).unwrap_or(defaults::TEMPERATURE),
            topk: self.topk.or(preset.topk).unwrap_or(defaults::TOPK),
            flow_steps: self.flow_steps.or(preset.flow_steps).unwrap_or(defaults::FLOW_STEPS),
            codec_guidance: self
                .codec_guidance
                .or(preset.codec_guidance)
                .unwrap_or(defaults::CODEC_GUIDANCE),
            speculate: self.speculate.or(preset.speculate).unwrap_or(0),
        };
        s.validate()?;
        Ok(s)
    }
}

impl Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        let range = |flag, value: String, expected| Err(SettingsError::Range { flag, value, expected });
        if !(self.duration > 0.0 && self.duration.is_finite()) {
            return range(
                "duration",
                self.duration.to_string(),
                "expected a positive number of seconds",
            );
        }
        if !(self.cfg_scale > 0.0 && self.cfg_scale.is_finite()) {
            return range("cfg-scale", self.cfg_scale.to_string(), "expected a positive number");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return range(
                "temperature",
                self.temperature.to_string(),
                "expected a positive number",
            );
        }
        if self.topk == 0 {
            return range("topk", "0".into(), "expected at least 1");
        }
        if self.flow_steps == 0 {
            return range("flow-steps", "0".into(), "expected at least 1");
        }
        if !(self.codec_guidance >= 1.0 && self.codec_guidance.is_finite()) {
            return range(
                "codec-guidance",
                self.codec_guidance.to_string(),
                "expected a number >= 1.0",
            );
        }
        Ok(())
    }

    /// Maximum number of frames fed back after the first (upstream:
    /// `max_audio_length_ms // 80`).
    pub fn max_audio_frames(&self) -> usize {
        heart::geometry::frames_in_ms((self.duration * 1000.0).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
    }

    #[test]
    fn flags_override_presets_override_defaults() {
        let preset = SettingsArgs::load_preset("speed", &configs()).unwrap();
        assert_eq!(preset.flow_steps, Some(4));
        let flags = SettingsArgs {
            topk: Some(10),
            ..Default::default()
        };
        let s = flags.resolve(&preset).unwrap();
        assert_eq!((s.topk, s.flow_steps, s.cfg_scale), (10, 4, defaults::CFG_SCALE));
        let flags = SettingsArgs {
            flow_steps: Some(8),
            ..Default::default()
        };
        assert_eq!(flags.resolve(&preset).unwrap().flow_steps, 8);
    }

    #[test]
    fn shipped_presets_parse() {
        for name in ["speed", "quality"] {
            let p = SettingsArgs::load_preset(name, &configs()).unwrap();
            SettingsArgs::default().resolve(&p).unwrap();
        }
        let q = SettingsArgs::load_preset("quality", &configs()).unwrap();
        let s = SettingsArgs::default().resolve(&q).unwrap();
        let d = SettingsArgs::default().resolve(&SettingsArgs::default()).unwrap();
        assert_eq!(s, d, "quality preset spells out the upstream defaults");
    }

    #[test]
    fn bad_presets_and_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "flow_stepz = 3\n").unwrap();
        let err = SettingsArgs::load_preset(bad.to_str().unwrap(), &configs())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("flow_stepz"), "{err}");
        let err = SettingsArgs::load_preset("nope", &configs()).unwrap_err().to_string();
        assert!(err.contains("nope.toml"), "{err}");
        let flags = SettingsArgs {
            temperature: Some(0.0),
            ..Default::default()
        };
        let err = flags.resolve(&SettingsArgs::default()).unwrap_err().to_string();
        assert_eq!(err, "--temperature 0: expected a positive number");
    }

    #[test]
    fn speculation_is_off_unless_asked_for() {
        let none = SettingsArgs::default().resolve(&SettingsArgs::default()).unwrap();
        assert_eq!(none.speculate, 0);
        let preset: SettingsArgs = toml::from_str("speculate = 2").unwrap();
        assert_eq!(SettingsArgs::default().resolve(&preset).unwrap().speculate, 2);
        let off = SettingsArgs {
            speculate: Some(0),
            ..Default::default()
        };
        assert_eq!(
            off.resolve(&preset).unwrap().speculate,
            0,
            "--speculate 0 overrides the preset"
        );
    }

    #[cfg(feature = "clap")]
    #[test]
    fn bare_speculate_flag_drafts_the_default_frames() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: SettingsArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().settings.speculate;
        assert_eq!(parse(&["x", "--speculate"]), Some(defaults::SPECULATE_K));
        assert_eq!(parse(&["x", "--speculate", "--topk", "3"]), Some(defaults::SPECULATE_K));
        assert_eq!(parse(&["x", "--speculate", "2"]), Some(2));
        assert_eq!(parse(&["x"]), None);
    }

    #[test]
    fn frame_budget_follows_upstream() {
        let s = SettingsArgs {
            duration: Some(0.96),
            ..Default::default()
        }
        .resolve(&SettingsArgs::default())
        .unwrap();
        assert_eq!(s.max_audio_frames(), 12);
    }
}
