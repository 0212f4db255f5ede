//! Build profiles (`configs/build/*.toml`): which LM linear groups are
//! quantized, to what, whether activations are quantized too, which graph
//! lowering the quantizers get, and how the calibration run behind activation
//! scales is done. The keys are documented in `configs/build/fp4.toml`.
//!
//! This module is the schema and its validation, shared by `heart-build`
//! (which turns a profile into export options) and the cost model (which
//! reads what an engine's recorded profile stores densely). Profiles are
//! compiled in by name ([`BUILT_IN`]) so the binaries work anywhere; a file
//! path reads one from disk.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::manifest::{ProfileEntry, sha256_bytes};
use crate::precision::Precision;

/// Profiles compiled in, by name.
pub const BUILT_IN: [(&str, &str); 8] = [
    ("fp32", include_str!("../configs/build/fp32.toml")),
    ("fp16", include_str!("../configs/build/fp16.toml")),
    ("fp8", include_str!("../configs/build/fp8.toml")),
    ("fp4", include_str!("../configs/build/fp4.toml")),
    ("fp4-w4a4", include_str!("../configs/build/fp4-w4a4.toml")),
    ("int8", include_str!("../configs/build/int8.toml")),
    ("int4", include_str!("../configs/build/int4.toml")),
    ("int4-heads", include_str!("../configs/build/int4-heads.toml")),
];

/// Errors reading a build profile; each names the profile and, where one is
/// at fault, the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The profile file could not be read.
    #[error("reading build profile {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, or keys the schema does not know.
    #[error("build profile {origin}: {message}")]
    Syntax {
        /// Where the profile came from.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A key holds a value the schema does not allow.
    #[error("build profile {origin}: `{key}`: {message}")]
    Key {
        /// Where the profile came from.
        origin: String,
        /// The key (`lm.quantize`, `calibration.percentile`, ...).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// No compiled-in profile of that name.
    #[error("no build profile `{name}` (built-in: {built_in}; or pass a .toml file path)")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The compiled-in names.
        built_in: String,
    },
    /// `--precision` and the profile disagree.
    #[error("--precision {asked} contradicts profile `{name}` ({origin}: lm.precision = \"{precision}\")")]
    Contradiction {
        /// The precision asked for.
        asked: Precision,
        /// The profile's name.
        name: String,
        /// Where it came from.
        origin: String,
        /// The profile's precision.
        precision: Precision,
    },
}

/// Groups of linear layers a build profile can quantize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinearGroup {
    /// `backbone.layers.*.attn.{q,k,v,output}_proj`.
    BackboneAttention,
    /// `backbone.layers.*.mlp.{w1,w2,w3}`.
    BackboneMlp,
    /// `decoder.layers.*.attn.{q,k,v,output}_proj`.
    DecoderAttention,
    /// `decoder.layers.*.mlp.{w1,w2,w3}`.
    DecoderMlp,
    /// `projection` (backbone width → decoder width).
    Projection,
    /// `codebook0_head` (backbone hidden → codebook-0 logits).
    Codebook0Head,
    /// `audio_head` (decoder hidden → codebook 1..7 logits).
    AudioHead,
}

impl LinearGroup {
    /// Every group, in profile order.
    pub const ALL: [LinearGroup; 7] = [
        Self::BackboneAttention,
        Self::BackboneMlp,
        Self::DecoderAttention,
        Self::DecoderMlp,
        Self::Projection,
        Self::Codebook0Head,
        Self::AudioHead,
    ];

    /// The profile spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BackboneAttention => "backbone.attention",
            Self::BackboneMlp => "backbone.mlp",
            Self::DecoderAttention => "decoder.attention",
            Self::DecoderMlp => "decoder.mlp",
            Self::Projection => "projection",
            Self::Codebook0Head => "codebook0_head",
            Self::AudioHead => "audio_head",
        }
    }

    /// The attention group of stack `prefix` (`backbone` or `decoder`).
    pub fn attention(prefix: &str) -> Self {
        if prefix == "decoder" {
            Self::DecoderAttention
        } else {
            Self::BackboneAttention
        }
    }

    /// The MLP group of stack `prefix` (`backbone` or `decoder`).
    pub fn mlp(prefix: &str) -> Self {
        if prefix == "decoder" {
            Self::DecoderMlp
        } else {
            Self::BackboneMlp
        }
    }
}

impl fmt::Display for LinearGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinearGroup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|g| g.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|g| g.as_str()).collect();
            format!("unknown linear group `{s}` (expected one of {})", names.join(", "))
        })
    }
}

/// Storage format of the quantized groups' weights, or of their activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Not quantized.
    None,
    /// NVFP4: E2M1 values, E4M3 scale per 16 inputs, f32 scale per tensor.
    Nvfp4,
    /// FP8 E4M3FN.
    Fp8,
    /// Blockwise int8 (`MatMulNBits`; weights only).
    Int8,
    /// Blockwise int4 (`MatMulNBits`; weights only).
    Int4,
}

impl Format {
    fn none() -> Self {
        Self::None
    }

    /// Whether this is one of the blockwise integer weight formats.
    pub fn is_int(self) -> bool {
        matches!(self, Self::Int8 | Self::Int4)
    }

    /// The engine precision of weights stored in this format (`compute` when
    /// nothing is quantized).
    fn precision(self, compute: Precision) -> Precision {
        match self {
            Self::None => compute,
            Self::Nvfp4 => Precision::Fp4,
            Self::Fp8 => Precision::Fp8,
            Self::Int8 => Precision::Int8,
            Self::Int4 => Precision::Int4,
        }
    }
}

/// Which graph form the quantized weights and activations get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lowering {
    /// Standard operators ONNX Runtime CPU runs, bit-exact (the only one that runs without a GPU).
    #[default]
    Portable,
    /// NVIDIA's TensorRT form (FLOAT4E2M1 initializers, `trt::` activation quantizer).
    #[serde(rename = "tensorrt")]
    TensorRt,
    /// The fp32 simulation of the format: reference-dequantized dense weights
    /// and the portable activation quantizers. What `heart-eval exact` checks
    /// an engine against (`heart-build simulate`); not an engine to ship, so
    /// no profile file can ask for it.
    #[serde(skip)]
    Reference,
}

/// How activation amax values are chosen from the calibration statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
    #[serde(default = "calibration_defaults::percentile")]
    pub percentile: f64,
    /// Input rows sampled per probe for [`Method::Mse`].
    #[serde(default = "calibration_defaults::mse_rows")]
    pub mse_rows: usize,
    /// Candidate fractions of the max tried by [`Method::Mse`].
    #[serde(default = "calibration_defaults::mse_candidates")]
    pub mse_candidates: usize,
    /// Self-generated frames per prompt after the first.
    #[serde(default = "calibration_defaults::frames_per_prompt")]
    pub frames_per_prompt: usize,
    /// Use only the first N prompts (0 = all).
    #[serde(default)]
    pub max_prompts: usize,
    /// Base seed of the sampling (prompt `i` uses `seed + i`) and of row sampling.
    #[serde(default)]
    pub seed: u64,
    /// LM guidance scale during calibration.
    #[serde(default = "calibration_defaults::cfg_scale")]
    pub cfg_scale: f32,
    /// Sampling temperature.
    #[serde(default = "calibration_defaults::temperature")]
    pub temperature: f32,
    /// Sampling top-k.
    #[serde(default = "calibration_defaults::topk")]
    pub topk: usize,
}

mod calibration_defaults {
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
        crate::defaults::CFG_SCALE
    }
    pub fn temperature() -> f32 {
        crate::defaults::TEMPERATURE
    }
    pub fn topk() -> usize {
        crate::defaults::TOPK
    }
}

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
    lowering: Lowering,
    #[serde(default)]
    quantize: Vec<String>,
    accuracy_level: Option<i64>,
    int4_kernel: Option<Int4Kernel>,
}

/// Which CPU kernel runs int4 linears at accuracy level 4 (the profile key
/// `lm.int4_kernel`). Both quantize each 32-element block of the activations
/// to int8 the same way and compute the same integer block products; only the
/// f32 summation order differs (≈ 1e-7 relative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Int4Kernel {
    /// `ai.heart.MatMulInt4x16` (`heart::quant::int4x16`), the default: on
    /// AVX-512 VNNI CPUs it streams int4 weights at 24.5 GB/s on 2 cores where
    /// `MatMulNBits` does 16.6 (`cargo bench --bench ort_kernels`); elsewhere
    /// its portable path is far slower.
    Heart,
    /// ONNX Runtime's `com.microsoft.MatMulNBits` (MLAS kernels for every CPU).
    Onnxruntime,
}

impl Int4Kernel {
    /// The kernel an int4 profile gets without the key: heart's at accuracy
    /// level 4 (the only level it implements), `MatMulNBits` otherwise.
    pub fn default_at(accuracy_level: i64) -> Self {
        if accuracy_level == 4 {
            Self::Heart
        } else {
            Self::Onnxruntime
        }
    }
}

/// `MatMulNBits` accuracy levels a profile may ask for: 0 (f32 activations)
/// or 4 (int8 activations, the default). The CPU kernels treat 1 like 0 and
/// have no 2 or 3, so those are not offered.
pub const ACCURACY_LEVELS: [i64; 2] = [0, 4];

/// A validated build profile.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildProfile {
    /// How it is recorded in the manifest.
    pub entry: ProfileEntry,
    /// The LM precision recorded in the manifest.
    pub precision: Precision,
    /// Dtype of activations, KV cache and unquantized weights (fp32 or fp16).
    pub compute: Precision,
    /// Weight format of the quantized groups; `None` for dense profiles.
    pub weights: Option<Format>,
    /// Activation format of the quantized groups' inputs; `None` for weight-only.
    pub activations: Option<Format>,
    /// Graph form of the quantizers.
    pub lowering: Lowering,
    /// The quantized groups (empty exactly when `weights` is `None`).
    pub groups: BTreeSet<LinearGroup>,
    /// `MatMulNBits` accuracy level of int weights (one of [`ACCURACY_LEVELS`]).
    pub accuracy_level: Option<i64>,
    /// The kernel of int4 linears; `Some` exactly for int4 weights.
    pub int4_kernel: Option<Int4Kernel>,
    /// Calibration settings, present exactly when activations are quantized.
    pub calibration: Option<CalibrationSettings>,
}

impl BuildProfile {
    /// Resolves `--profile` / `--precision`: a file path, a built-in name, or
    /// (neither given) the built-in named after the precision (default fp32).
    pub fn resolve(profile: Option<&str>, precision: Option<Precision>) -> Result<Self, ProfileError> {
        let p = match profile {
            Some(arg) if Path::new(arg).is_file() => {
                let path = Path::new(arg);
                let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
                    path: arg.to_string(),
                    source,
                })?;
                let name = path
                    .file_stem()
                    .map_or(arg.into(), |s| s.to_string_lossy().into_owned());
                Self::parse(&name, arg, &text)?
            }
            Some(name) => Self::built_in(name)?,
            None => Self::built_in(precision.unwrap_or(Precision::Fp32).as_str())?,
        };
        if let Some(asked) = precision.filter(|&asked| asked != p.precision) {
            return Err(ProfileError::Contradiction {
                asked,
                name: p.entry.name,
                origin: p.entry.source,
                precision: p.precision,
            });
        }
        Ok(p)
    }

    /// A compiled-in profile.
    pub fn built_in(name: &str) -> Result<Self, ProfileError> {
        let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            return Err(ProfileError::Unknown {
                name: name.to_string(),
                built_in: names.join(", "),
            });
        };
        Self::parse(name, &format!("built-in configs/build/{name}.toml"), text)
    }

    /// Parses and validates a profile's text; `source` names it in errors.
    pub fn parse(name: &str, source: &str, text: &str) -> Result<Self, ProfileError> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| ProfileError::Syntax {
            origin: source.to_string(),
            message: e.to_string(),
        })?;
        let bad = |key: &str, message: String| ProfileError::Key {
            origin: source.to_string(),
            key: key.to_string(),
            message,
        };
        let lm = &file.lm;
        if lm.compute.compute_bytes().is_none() {
            return Err(bad(
                "lm.compute",
                format!("{} is not a compute dtype (fp32 or fp16)", lm.compute),
            ));
        }
        let expected = lm.weights.precision(lm.compute);
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
        let accuracy_level = check_int(lm).map_err(|(k, m)| bad(k, m))?;
        let int4_kernel = check_int4_kernel(lm, accuracy_level).map_err(|(k, m)| bad(k, m))?;
        let weights = (lm.weights != Format::None).then_some(lm.weights);
        if weights.is_some() == groups.is_empty() {
            return Err(bad(
                "lm.quantize",
                "must list the quantized groups exactly when `lm.weights` is not \"none\"".into(),
            ));
        }
        let activations = (lm.activations != Format::None).then_some(lm.activations);
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
        Ok(Self {
            entry: ProfileEntry {
                name: name.to_string(),
                source: source.to_string(),
                sha256: sha256_bytes(text.as_bytes()),
                text: text.to_string(),
            },
            precision: lm.precision,
            compute: lm.compute,
            weights,
            activations,
            lowering: lm.lowering,
            groups,
            accuracy_level,
            int4_kernel,
            calibration,
        })
    }

    /// Whether `group` is quantized.
    pub fn quantizes(&self, group: LinearGroup) -> bool {
        self.groups.contains(&group)
    }

    /// The precision the heads are stored at: the profile precision when it
    /// quantizes both `codebook0_head` and `audio_head`, else the compute dtype.
    pub fn head_precision(&self) -> Precision {
        if self.quantizes(LinearGroup::Codebook0Head) && self.quantizes(LinearGroup::AudioHead) {
            self.precision
        } else {
            self.compute
        }
    }
}

/// The rules of int weights (`MatMulNBits`): f32 compute, no static
/// activation quantization, `accuracy_level` 0 or 4 (default 4) and only with
/// int weights. Returns the accuracy level; the error names the key.
fn check_int(lm: &LmSection) -> Result<Option<i64>, (&'static str, String)> {
    if lm.activations.is_int() {
        return Err((
            "lm.activations",
            "int8 and int4 are weight formats; int weights quantize activations through `accuracy_level`".into(),
        ));
    }
    if !lm.weights.is_int() {
        return match lm.accuracy_level {
            None => Ok(None),
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
    if !ACCURACY_LEVELS.contains(&level) {
        return Err(("lm.accuracy_level", format!("{level} is not 0 or 4")));
    }
    Ok(Some(level))
}

/// `lm.int4_kernel`: only with int4 weights; `heart` (the default at level 4)
/// needs level 4, level 0 defaults to `onnxruntime`. The error names the key.
fn check_int4_kernel(lm: &LmSection, level: Option<i64>) -> Result<Option<Int4Kernel>, (&'static str, String)> {
    if lm.weights != Format::Int4 {
        return match lm.int4_kernel {
            None => Ok(None),
            Some(_) => Err(("lm.int4_kernel", "applies to int4 weights only".into())),
        };
    }
    match (lm.int4_kernel, level) {
        (Some(Int4Kernel::Heart), Some(l)) if l != 4 => Err((
            "lm.int4_kernel",
            format!("\"heart\" quantizes activations to int8 (accuracy_level 4), not level {l}"),
        )),
        (Some(k), _) => Ok(Some(k)),
        (None, l) => Ok(Some(Int4Kernel::default_at(l.unwrap_or(4)))),
    }
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

    fn parse_err(text: &str) -> String {
        BuildProfile::parse("t", "t.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn built_in_profiles_parse_and_match_their_precision() {
        for (name, _) in BUILT_IN {
            let p = BuildProfile::built_in(name).unwrap();
            assert!(name.starts_with(p.precision.as_str()), "{name}");
        }
        let w4a4 = BuildProfile::built_in("fp4-w4a4").unwrap();
        assert_eq!(w4a4.activations, Some(Format::Nvfp4));
        assert!(w4a4.calibration.is_some());
        let fp4 = BuildProfile::built_in("fp4").unwrap();
        assert_eq!(fp4.activations, None, "W4A16 needs no calibration");
        assert!(fp4.quantizes(LinearGroup::BackboneMlp) && !fp4.quantizes(LinearGroup::Codebook0Head));
        assert_eq!(fp4.compute, Precision::Fp4.default_compute());
        assert_eq!(fp4.head_precision(), Precision::Fp16);
        assert_eq!(
            BuildProfile::built_in("int4-heads").unwrap().head_precision(),
            Precision::Int4
        );
        assert_eq!(
            BuildProfile::built_in("int4").unwrap().head_precision(),
            Precision::Fp32
        );
    }

    #[test]
    fn precision_selects_and_must_agree_with_the_profile() {
        assert_eq!(BuildProfile::resolve(None, None).unwrap().entry.name, "fp32");
        assert_eq!(
            BuildProfile::resolve(None, Some(Precision::Fp8)).unwrap().entry.name,
            "fp8"
        );
        let p = BuildProfile::resolve(Some("fp4-w4a4"), Some(Precision::Fp4)).unwrap();
        assert_eq!(p.entry.name, "fp4-w4a4");
        let err = BuildProfile::resolve(Some("fp4-w4a4"), Some(Precision::Fp8))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--precision fp8 contradicts profile `fp4-w4a4`"), "{err}");
        let err = BuildProfile::resolve(Some("fp5"), None).unwrap_err().to_string();
        assert!(
            err.contains("no build profile `fp5`") && err.contains("fp4-w4a4"),
            "{err}"
        );
    }

    #[test]
    fn int_profiles_compute_in_f32_at_accuracy_level_0_or_4() {
        for name in ["int8", "int4"] {
            let p = BuildProfile::built_in(name).unwrap();
            assert_eq!((p.compute, p.accuracy_level), (Precision::Fp32, Some(4)), "{name}");
            assert_eq!(p.groups, BuildProfile::built_in("fp4").unwrap().groups);
        }
        let base = "[lm]\nprecision = \"int4\"\ncompute = \"fp32\"\nweights = \"int4\"\nquantize = [\"projection\"]\n";
        let p = BuildProfile::parse("t", "t.toml", &format!("{base}accuracy_level = 0\n")).unwrap();
        assert_eq!(
            (p.accuracy_level, p.int4_kernel),
            (Some(0), Some(Int4Kernel::Onnxruntime))
        );
        let p = BuildProfile::parse("t", "t.toml", base).unwrap();
        assert_eq!(
            p.int4_kernel,
            Some(Int4Kernel::Heart),
            "heart's kernel by default at level 4"
        );
        let p = BuildProfile::parse("t", "t.toml", &format!("{base}int4_kernel = \"onnxruntime\"\n")).unwrap();
        assert_eq!(p.int4_kernel, Some(Int4Kernel::Onnxruntime));
        let err = parse_err(&format!("{base}accuracy_level = 0\nint4_kernel = \"heart\"\n"));
        assert!(err.contains("`lm.int4_kernel`") && err.contains("not level 0"), "{err}");
        let err = parse_err(&format!("{base}int4_kernel = \"mlas\"\n"));
        assert!(err.contains("mlas"), "{err}");
        let int8 = base.replace("\"int4\"", "\"int8\"");
        assert_eq!(BuildProfile::parse("t", "t.toml", &int8).unwrap().int4_kernel, None);
        let err = parse_err(&format!("{int8}int4_kernel = \"heart\"\n"));
        assert!(
            err.contains("`lm.int4_kernel`") && err.contains("int4 weights only"),
            "{err}"
        );
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
