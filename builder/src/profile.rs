//! Build profiles (`configs/build/*.toml`): which LM linear groups are
//! quantized, to what, whether activations are quantized too, and how the
//! calibration run behind activation scales is done. The keys are documented
//! in `configs/build/fp4.toml`.
//!
//! `--profile NAME` picks a profile compiled into `heart-build` from
//! `configs/build/` (so the binary works anywhere); `--profile FILE.toml` (any
//! argument that names an existing file) reads one from disk. Without
//! `--profile`, the profile named after `--precision` is used. The manifest
//! records the profile's name, source, SHA-256 and text.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use heart::manifest::{ProfileEntry, sha256_bytes};
use heart::precision::Precision;
use heart::quant::blockwise::IntBits;
use onnx_export::linears::Lowering;
use onnx_export::lm::{GraphForm, LinearGroup, LmOptions, QuantFormat, QuantPlan, numerics};
use onnx_export::quant::{Accuracy, NBits};
use serde::Deserialize;

/// Profiles compiled in, by name.
pub const BUILT_IN: [(&str, &str); 8] = [
    ("fp32", include_str!("../../configs/build/fp32.toml")),
    ("fp16", include_str!("../../configs/build/fp16.toml")),
    ("fp8", include_str!("../../configs/build/fp8.toml")),
    ("fp4", include_str!("../../configs/build/fp4.toml")),
    ("fp4-w4a4", include_str!("../../configs/build/fp4-w4a4.toml")),
    ("int8", include_str!("../../configs/build/int8.toml")),
    ("int4", include_str!("../../configs/build/int4.toml")),
    ("int4-heads", include_str!("../../configs/build/int4-heads.toml")),
];

/// The file's layout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    lm: LmSection,
    calibration: Option<CalibrationSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LmSection {
    precision: Precision,
    compute: Precision,
    weights: Format,
    #[serde(default = "Format::none")]
    activations: Format,
    #[serde(default)]
    lowering: LoweringKey,
    #[serde(default)]
    quantize: Vec<String>,
    /// `MatMulNBits` accuracy level of int weights (0 or 4).
    accuracy_level: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    None,
    Nvfp4,
    Fp8,
    Int8,
    Int4,
}

impl Format {
    fn none() -> Self {
        Self::None
    }

    /// The format, with `accuracy` for int weights.
    fn quant(self, accuracy: Accuracy) -> Option<QuantFormat> {
        let int = |bits| QuantFormat::Int(NBits { bits, accuracy });
        match self {
            Self::None => None,
            Self::Nvfp4 => Some(QuantFormat::Nvfp4),
            Self::Fp8 => Some(QuantFormat::Fp8),
            Self::Int8 => Some(int(IntBits::Int8)),
            Self::Int4 => Some(int(IntBits::Int4)),
        }
    }

    fn is_int(self) -> bool {
        matches!(self, Self::Int8 | Self::Int4)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LoweringKey {
    #[default]
    Portable,
    Tensorrt,
}

/// How activation amax values are chosen from the calibration statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The largest |x| seen.
    Max,
    /// A percentile of the per-token amax values.
    Percentile,
    /// The fraction of the max that minimises the fake-quantization error.
    Mse,
}

impl Method {
    /// The profile spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Max => "max",
            Self::Percentile => "percentile",
            Self::Mse => "mse",
        }
    }
}

/// The `[calibration]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSettings {
    /// How the exported amax is chosen.
    pub method: Method,
    /// Percentile (0, 100] of per-token amax for [`Method::Percentile`].
    #[serde(default = "defaults::percentile")]
    pub percentile: f64,
    /// Input rows sampled per probe for [`Method::Mse`].
    #[serde(default = "defaults::mse_rows")]
    pub mse_rows: usize,
    /// Candidate fractions of the max tried by [`Method::Mse`].
    #[serde(default = "defaults::mse_candidates")]
    pub mse_candidates: usize,
    /// Self-generated frames per prompt after the first.
    #[serde(default = "defaults::frames_per_prompt")]
    pub frames_per_prompt: usize,
    /// Use only the first N prompts (0 = all).
    #[serde(default)]
    pub max_prompts: usize,
    /// Base seed of the sampling (prompt `i` uses `seed + i`) and of row sampling.
    #[serde(default)]
    pub seed: u64,
    /// LM guidance scale during calibration.
    #[serde(default = "defaults::cfg_scale")]
    pub cfg_scale: f32,
    /// Sampling temperature.
    #[serde(default = "defaults::temperature")]
    pub temperature: f32,
    /// Sampling top-k.
    #[serde(default = "defaults::topk")]
    pub topk: usize,
}

mod defaults {
    pub fn percentile() -> f64 {
        99.9
    }
    pub fn mse_rows() -> usize {
        64
    }
    pub fn mse_candidates() -> usize {
        48
    }
    pub fn frames_per_prompt() -> usize {
        8
    }
    pub fn cfg_scale() -> f32 {
        1.5
    }
    pub fn temperature() -> f32 {
        1.0
    }
    pub fn topk() -> usize {
        50
    }
}

/// A resolved build profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// How it is recorded in the manifest.
    pub entry: ProfileEntry,
    /// The LM precision.
    pub precision: Precision,
    /// Export options, without activation amax values (calibration fills them).
    pub options: LmOptions,
    /// The activation format, when activations are quantized.
    pub activations: Option<QuantFormat>,
    /// Calibration settings, when activations are quantized.
    pub calibration: Option<CalibrationSettings>,
}

impl Profile {
    /// Resolves `--profile` / `--precision`: a file path, a built-in name, or
    /// (neither given) the built-in named after the precision (default fp32).
    pub fn resolve(profile: Option<&str>, precision: Option<Precision>) -> Result<Self> {
        let p = match profile {
            Some(arg) if Path::new(arg).is_file() => {
                let path = Path::new(arg);
                let text = std::fs::read_to_string(path).with_context(|| format!("reading profile {arg}"))?;
                let name = path
                    .file_stem()
                    .map_or(arg.into(), |s| s.to_string_lossy().into_owned());
                Self::parse(&name, arg, &text)?
            }
            Some(name) => Self::built_in(name)?,
            None => Self::built_in(precision.unwrap_or(Precision::Fp32).as_str())?,
        };
        if let Some(asked) = precision.filter(|&asked| asked != p.precision) {
            bail!(
                "--precision {asked} contradicts profile `{}` ({}: lm.precision = \"{}\")",
                p.entry.name,
                p.entry.source,
                p.precision
            );
        }
        Ok(p)
    }

    /// A compiled-in profile.
    pub fn built_in(name: &str) -> Result<Self> {
        let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            bail!(
                "no build profile `{name}` (built-in: {}; or pass a .toml file path)",
                names.join(", ")
            );
        };
        Self::parse(name, &format!("built-in configs/build/{name}.toml"), text)
    }

    /// Parses and validates a profile's text; `source` names it in errors.
    pub fn parse(name: &str, source: &str, text: &str) -> Result<Self> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("build profile {source}: {e}"))?;
        let bad = |key: &str, message: String| anyhow::anyhow!("build profile {source}: `{key}`: {message}");
        let lm = &file.lm;
        if !matches!(lm.compute, Precision::Fp32 | Precision::Fp16) {
            return Err(bad(
                "lm.compute",
                format!("{} is not a compute dtype (fp32 or fp16)", lm.compute),
            ));
        }
        let expected = match lm.weights {
            Format::None => lm.compute,
            Format::Nvfp4 => Precision::Fp4,
            Format::Fp8 => Precision::Fp8,
            Format::Int8 => Precision::Int8,
            Format::Int4 => Precision::Int4,
        };
        if lm.precision != expected {
            return Err(bad(
                "lm.precision",
                format!(
                    "\"{}\" does not describe these weights (expected \"{expected}\")",
                    lm.precision
                ),
            ));
        }
        let groups = lm
            .quantize
            .iter()
            .map(|g| g.parse::<LinearGroup>())
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|e| bad("lm.quantize", e))?;
        let accuracy = check_int(lm).map_err(|(k, m)| bad(k, m))?;
        let weights = lm.weights.quant(accuracy);
        if weights.is_some() == groups.is_empty() {
            return Err(bad(
                "lm.quantize",
                "must list the quantized groups exactly when `lm.weights` is not \"none\"".into(),
            ));
        }
        let activations = lm.activations.quant(accuracy);
        let calibration = match (activations, file.calibration) {
            (None, _) => None,
            (Some(_), None) if weights.is_none() => {
                return Err(bad("lm.activations", "needs quantized weights (`lm.weights`)".into()));
            }
            (Some(_), None) => {
                return Err(bad(
                    "calibration",
                    "quantized activations need a [calibration] table (their scales are calibrated)".into(),
                ));
            }
            (Some(_), Some(c)) => Some(check_calibration(c).map_err(|(k, m)| bad(&format!("calibration.{k}"), m))?),
        };
        let lowering = match lm.lowering {
            LoweringKey::Portable => Lowering::Portable,
            LoweringKey::Tensorrt => Lowering::TensorRt,
        };
        Ok(Self {
            entry: ProfileEntry {
                name: name.to_string(),
                source: source.to_string(),
                sha256: sha256_bytes(text.as_bytes()),
                text: text.to_string(),
            },
            precision: lm.precision,
            options: LmOptions {
                numerics: numerics(lm.compute),
                quant: weights.map(|weights| QuantPlan {
                    weights,
                    lowering,
                    groups: groups.clone(),
                    activations: None,
                }),
                probes: BTreeSet::new(),
                layer_taps: false,
                form: GraphForm::Cpu,
            },
            activations,
            calibration,
        })
    }
}

/// The rules of int weights (`MatMulNBits`): f32 compute, no static
/// activation quantization, `accuracy_level` 0 or 4 (default 4) and only with
/// int weights. Returns the accuracy; the error names the key.
fn check_int(lm: &LmSection) -> Result<Accuracy, (&'static str, String)> {
    if lm.activations.is_int() {
        return Err((
            "lm.activations",
            "int8 and int4 are weight formats; int weights quantize activations through `accuracy_level`".into(),
        ));
    }
    if !lm.weights.is_int() {
        return match lm.accuracy_level {
            None => Ok(Accuracy::Int8),
            Some(_) => Err(("lm.accuracy_level", "applies to int8/int4 weights only".into())),
        };
    }
    if lm.compute != Precision::Fp32 {
        return Err((
            "lm.compute",
            format!(
                "{} with int weights: MatMulNBits runs on f32 activations (use \"fp32\")",
                lm.compute
            ),
        ));
    }
    if lm.activations != Format::None {
        return Err((
            "lm.activations",
            "int weights take no static activation quantization (set `accuracy_level = 4` for int8 activations)".into(),
        ));
    }
    let level = lm.accuracy_level.unwrap_or(4);
    Accuracy::from_level(level).ok_or(("lm.accuracy_level", format!("{level} is not 0 or 4")))
}

/// Range checks of the `[calibration]` table; the error names the key.
fn check_calibration(c: CalibrationSettings) -> Result<CalibrationSettings, (&'static str, String)> {
    if !(c.percentile > 0.0 && c.percentile <= 100.0) {
        return Err(("percentile", format!("{} is not in (0, 100]", c.percentile)));
    }
    if c.mse_rows == 0 || c.mse_candidates < 2 {
        return Err(("mse_rows", "mse_rows must be ≥ 1 and mse_candidates ≥ 2".to_string()));
    }
    if c.frames_per_prompt == 0 {
        return Err(("frames_per_prompt", "must be ≥ 1".into()));
    }
    if !(c.cfg_scale > 0.0 && c.cfg_scale.is_finite()) {
        return Err(("cfg_scale", format!("{} is not a positive number", c.cfg_scale)));
    }
    if !(c.temperature > 0.0 && c.temperature.is_finite()) || c.topk == 0 {
        return Err(("temperature", "temperature must be positive and topk ≥ 1".into()));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse_and_match_their_precision() {
        for (name, _) in BUILT_IN {
            let p = Profile::built_in(name).unwrap();
            assert!(name.starts_with(p.precision.as_str()), "{name}");
        }
        let w4a4 = Profile::built_in("fp4-w4a4").unwrap();
        assert_eq!(w4a4.activations, Some(QuantFormat::Nvfp4));
        assert!(w4a4.calibration.is_some());
        let fp4 = Profile::built_in("fp4").unwrap();
        assert_eq!(fp4.activations, None, "W4A16 needs no calibration");
        let groups = &fp4.options.quant.as_ref().unwrap().groups;
        assert!(groups.contains(&LinearGroup::BackboneMlp) && !groups.contains(&LinearGroup::Codebook0Head));
        assert_eq!(fp4.options.numerics, numerics(Precision::Fp16));
    }

    #[test]
    fn precision_selects_and_must_agree_with_the_profile() {
        assert_eq!(Profile::resolve(None, None).unwrap().entry.name, "fp32");
        assert_eq!(Profile::resolve(None, Some(Precision::Fp8)).unwrap().entry.name, "fp8");
        let p = Profile::resolve(Some("fp4-w4a4"), Some(Precision::Fp4)).unwrap();
        assert_eq!(p.entry.name, "fp4-w4a4");
        let err = Profile::resolve(Some("fp4-w4a4"), Some(Precision::Fp8))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--precision fp8 contradicts profile `fp4-w4a4`"), "{err}");
        let err = Profile::resolve(Some("fp5"), None).unwrap_err().to_string();
        assert!(
            err.contains("no build profile `fp5`") && err.contains("fp4-w4a4"),
            "{err}"
        );
    }

    #[test]
    fn int_profiles_run_matmul_nbits_in_f32() {
        for (name, bits) in [("int8", IntBits::Int8), ("int4", IntBits::Int4)] {
            let p = Profile::resolve(None, Some(name.parse().unwrap())).unwrap();
            assert_eq!(p.entry.name, name);
            let plan = p.options.quant.as_ref().unwrap();
            assert_eq!(plan.weights, QuantFormat::Int(NBits::new(bits)));
            assert_eq!(NBits::new(bits).accuracy, Accuracy::Int8, "level 4 by default");
            assert_eq!(
                plan.groups,
                Profile::built_in("fp4").unwrap().options.quant.unwrap().groups
            );
            assert_eq!(p.options.numerics, numerics(Precision::Fp32));
            assert!(p.activations.is_none() && p.calibration.is_none());
        }
        let heads = Profile::resolve(Some("int4-heads"), Some(Precision::Int4)).unwrap();
        let groups = &heads.options.quant.as_ref().unwrap().groups;
        assert!(groups.contains(&LinearGroup::AudioHead) && groups.contains(&LinearGroup::Codebook0Head));
        let base = "[lm]\nprecision = \"int4\"\ncompute = \"fp32\"\nweights = \"int4\"\nquantize = [\"projection\"]\n";
        let p = Profile::parse("t", "t.toml", &format!("{base}accuracy_level = 0\n")).unwrap();
        let want = QuantFormat::Int(NBits {
            bits: IntBits::Int4,
            accuracy: Accuracy::Float,
        });
        assert_eq!(p.options.quant.unwrap().weights, want);
        let err = parse_err(&format!("{base}accuracy_level = 2\n"));
        assert!(
            err.contains("`lm.accuracy_level`") && err.contains("2 is not 0 or 4"),
            "{err}"
        );
        let err = parse_err(&base.replace("compute = \"fp32\"", "compute = \"fp16\""));
        assert!(err.contains("`lm.compute`") && err.contains("MatMulNBits"), "{err}");
        let err = parse_err(&format!("{base}activations = \"fp8\"\n"));
        assert!(err.contains("`lm.activations`"), "{err}");
        let err = parse_err(&format!("{base}activations = \"int8\"\n"));
        assert!(
            err.contains("`lm.activations`") && err.contains("weight formats"),
            "{err}"
        );
        let err = parse_err(&base.replace("precision = \"int4\"", "precision = \"int8\""));
        assert!(
            err.contains("`lm.precision`") && err.contains("expected \"int4\""),
            "{err}"
        );
        let err = parse_err(
            "[lm]\nprecision = \"fp4\"\ncompute = \"fp16\"\nweights = \"nvfp4\"\nquantize = [\"projection\"]\naccuracy_level = 4\n",
        );
        assert!(
            err.contains("`lm.accuracy_level`") && err.contains("int8/int4 weights only"),
            "{err}"
        );
    }

    fn parse_err(text: &str) -> String {
        Profile::parse("t", "t.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn profile_errors_name_the_file_and_key() {
        let base = "[lm]\nprecision = \"fp4\"\ncompute = \"fp16\"\nweights = \"nvfp4\"\n";
        let err = parse_err(&format!("{base}quantize = [\"backbone.mlp\", \"embeddings\"]\n"));
        assert!(
            err.contains("t.toml") && err.contains("`lm.quantize`") && err.contains("`embeddings`"),
            "{err}"
        );
        let err = parse_err(&format!(
            "{base}quantize = [\"backbone.mlp\"]\nactivatons = \"nvfp4\"\n"
        ));
        assert!(err.contains("t.toml") && err.contains("activatons"), "{err}");
        let err = parse_err(&format!(
            "{base}quantize = [\"backbone.mlp\"]\nactivations = \"nvfp4\"\n"
        ));
        assert!(err.contains("`calibration`") && err.contains("[calibration]"), "{err}");
        let err = parse_err(&format!("{base}quantize = []\n"));
        assert!(err.contains("`lm.quantize`"), "{err}");
        let err = parse_err(
            "[lm]\nprecision = \"fp8\"\ncompute = \"fp16\"\nweights = \"nvfp4\"\nquantize = [\"projection\"]\n",
        );
        assert!(
            err.contains("`lm.precision`") && err.contains("expected \"fp4\""),
            "{err}"
        );
        let err = parse_err(&format!(
            "{base}quantize = [\"projection\"]\nactivations = \"nvfp4\"\n[calibration]\nmethod = \"percentile\"\npercentile = 0\n"
        ));
        assert!(err.contains("`calibration.percentile`"), "{err}");
        let err = parse_err(&format!(
            "{base}quantize = [\"projection\"]\nactivations = \"nvfp4\"\n[calibration]\nmethod = \"mean\"\n"
        ));
        assert!(err.contains("t.toml") && err.contains("mean"), "{err}");
    }
}
