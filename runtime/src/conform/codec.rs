//! Conformance of the codec runtime against fixture cases (kinds `codec_rvq`,
//! `codec_estimator`, `codec_scalar_decode`, `codec_detokenize`).
//!
//! Each `check_*` function takes an opened [`Codec`] (engine built from the
//! fixture's `heartcodec/` checkpoint) and one case's tensors, runs the matching
//! stage and returns one [`Check`] per compared tensor at the fixture README's
//! tolerances. Nothing here depends on a particular fixture size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::ArrayView2;
use safetensors::{Dtype, SafeTensors};

use crate::codec::geometry::{OVERLAP_LATENTS, WINDOW_LATENTS, euler_steps};
use crate::codec::{Assembler, Codec, CodecError, DetokenizeParams, FlowParams, RecordedNoise, TailPolicy};

/// `codec_rvq_cond_mu` tolerance (atol, rtol).
pub const TOL_RVQ: (f64, f64) = (1e-4, 1e-5);
/// `codec_estimator_unit` tolerance.
pub const TOL_ESTIMATOR: (f64, f64) = (1e-4, 1e-4);
/// `codec_flow_latents_given_recorded_noise` tolerance.
pub const TOL_LATENTS: (f64, f64) = (1e-3, 1e-3);
/// `codec_decode_from_recorded_latents` tolerance.
pub const TOL_DECODE: (f64, f64) = (1e-4, 1e-4);
/// `codec_waveform_end_to_end` tolerance.
pub const TOL_END_TO_END: (f64, f64) = (5e-2, 0.0);
/// Exact comparison (integer tensors, f32-exact schedules).
pub const EXACT: (f64, f64) = (0.0, 0.0);

/// One compared tensor: passes iff every `|actual − expected| ≤ atol + rtol·|expected|`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Case-qualified tensor name, e.g. `codec_detok_T40_steps10/latents`.
    pub name: String,
    /// Largest absolute difference.
    pub max_abs_err: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Elements outside the tolerance (a length mismatch counts every element).
    pub violations: usize,
    /// Whether the tensor is within tolerance everywhere (and has the right length).
    pub passed: bool,
}

impl Check {
    /// Compares `actual` with `expected` element-wise.
    pub fn compare(name: impl Into<String>, actual: &[f32], expected: &[f32], (atol, rtol): (f64, f64)) -> Self {
        let mut max_abs_err: f64 = 0.0;
        let mut violations = 0;
        for (&a, &e) in actual.iter().zip(expected) {
            let (a, e) = (f64::from(a), f64::from(e));
            let err = (a - e).abs();
            let ok = err <= atol + rtol * e.abs();
            if !ok || err.is_nan() {
                violations += 1;
            }
            max_abs_err = max_abs_err.max(if err.is_nan() { f64::INFINITY } else { err });
        }
        if actual.len() != expected.len() {
            violations = actual.len().max(expected.len());
            max_abs_err = f64::INFINITY;
        }
        Self {
            name: name.into(),
            max_abs_err,
            atol,
            rtol,
            violations,
            passed: violations == 0,
        }
    }
}

/// Errors while reading a case or running the codec on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// The case file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The case file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The case file is malformed or lacks a tensor / info field.
    #[error("{}: {message}", path.display())]
    Format {
        /// The case file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The codec failed on the case's inputs.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The tensors of one case file (`cases/<case>.safetensors`), as f32 or i64.
#[derive(Debug, Clone)]
pub struct CaseTensors {
    path: PathBuf,
    f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
    i64s: HashMap<String, (Vec<usize>, Vec<i64>)>,
}

impl CaseTensors {
    /// Reads every F32 and I64 tensor of `path`.
    pub fn load(path: &Path) -> Result<Self, CaseError> {
        let bytes = std::fs::read(path).map_err(|source| CaseError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format_err(path, e.to_string()))?;
        let mut out = Self {
            path: path.to_path_buf(),
            f32s: HashMap::new(),
            i64s: HashMap::new(),
        };
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            match view.dtype() {
                Dtype::F32 => {
                    let v = view
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                    out.f32s.insert(name, (shape, v.collect()));
                }
                Dtype::I64 => {
                    let v = view
                        .data()
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")));
                    out.i64s.insert(name, (shape, v.collect()));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Case name (file stem).
    pub fn case_name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// An f32 tensor's shape and data.
    pub fn f32(&self, name: &str) -> Result<(&[usize], &[f32]), CaseError> {
        let (s, d) = self.f32s.get(name).ok_or_else(|| self.missing(name, "F32"))?;
        Ok((s, d))
    }

    /// An i64 tensor's shape and data.
    pub fn i64(&self, name: &str) -> Result<(&[usize], &[i64]), CaseError> {
        let (s, d) = self.i64s.get(name).ok_or_else(|| self.missing(name, "I64"))?;
        Ok((s, d))
    }

    fn missing(&self, name: &str, dtype: &str) -> CaseError {
        format_err(&self.path, format!("no {dtype} tensor `{name}`"))
    }

    fn shape_err(&self, name: &str, shape: &[usize], expected: &str) -> CaseError {
        format_err(
            &self.path,
            format!("tensor `{name}` has shape {shape:?}, expected {expected}"),
        )
    }
}

fn format_err(path: &Path, message: String) -> CaseError {
    CaseError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// Detokenize settings from a case's `info` object (`num_steps`, `guidance_scale`).
/// The tail policy is upstream's, so any length the fixture chose is reproduced.
pub fn detokenize_params_from_info(info: &serde_json::Value, path: &Path) -> Result<DetokenizeParams, CaseError> {
    let num_steps = info["num_steps"]
        .as_u64()
        .ok_or_else(|| format_err(path, "info.num_steps missing or not an integer".into()))?;
    let guidance = info["guidance_scale"]
        .as_f64()
        .ok_or_else(|| format_err(path, "info.guidance_scale missing or not a number".into()))?;
    Ok(DetokenizeParams {
        flow: FlowParams {
            num_steps: num_steps as usize,
            guidance: guidance as f32,
        },
        tail: TailPolicy::UpstreamQuirk,
    })
}

/// `codec_rvq`: `vq_out`, `cond`, `mu` from `codes` `[Q, T]` (no padding).
pub fn check_rvq(codec: &Codec, case: &CaseTensors) -> Result<Vec<Check>, CaseError> {
    let (shape, codes) = case.i64("codes")?;
    let codes =
        ArrayView2::from_shape((shape[0], shape[1]), codes).map_err(|_| case.shape_err("codes", shape, "[Q, T]"))?;
    let c = codec.tables().condition(codes)?;
    let n = case.case_name();
    Ok(vec![
        Check::compare(format!("{n}/vq_out"), flat(&c.vq_out), case.f32("vq_out")?.1, TOL_RVQ),
        Check::compare(format!("{n}/cond"), flat(&c.cond), case.f32("cond")?.1, TOL_RVQ),
        Check::compare(format!("{n}/mu"), flat(&c.mu), case.f32("mu")?.1, TOL_RVQ),
    ])
}

/// `codec_estimator`: the estimator graph on `input` `[B, S, C]` and `timestep` `[B]`.
pub fn check_estimator(codec: &mut Codec, case: &CaseTensors) -> Result<Vec<Check>, CaseError> {
    let (shape, input) = case.f32("input")?;
    let (_, t) = case.f32("timestep")?;
    if shape.len() != 3 || shape[0] != t.len() {
        return Err(case.shape_err("input", shape, "[B, S, in_channels] with B = len(timestep)"));
    }
    let v = codec.estimator().velocity(input, shape[1], t)?;
    let n = case.case_name();
    Ok(vec![Check::compare(
        format!("{n}/output"),
        &v,
        case.f32("output")?.1,
        TOL_ESTIMATOR,
    )])
}

/// `codec_scalar_decode`: the scalar decoder on `input` `[N, 128, T]`.
pub fn check_scalar_decode(codec: &mut Codec, case: &CaseTensors) -> Result<Vec<Check>, CaseError> {
    let (shape, input) = case.f32("input")?;
    if shape.len() != 3 {
        return Err(case.shape_err("input", shape, "[N, latent_hidden_dim, T]"));
    }
    let out = codec.decoder().decode(input, shape[0], shape[2])?;
    let n = case.case_name();
    Ok(vec![Check::compare(
        format!("{n}/output"),
        &out,
        case.f32("output")?.1,
        TOL_DECODE,
    )])
}

/// `codec_detokenize`: full detokenize with the recorded noise, checking every
/// intermediate per window, the decode (and assembly) of the *recorded* latents
/// tightly, and the end-to-end waveform at the end-to-end tolerance.
pub fn check_detokenize(
    codec: &mut Codec,
    case: &CaseTensors,
    params: DetokenizeParams,
) -> Result<Vec<Check>, CaseError> {
    let n = case.case_name();
    let (shape, codes) = case.i64("codes")?;
    let codes =
        ArrayView2::from_shape((shape[0], shape[1]), codes).map_err(|_| case.shape_err("codes", shape, "[Q, T]"))?;
    let mut noise = RecordedNoise::new(case.f32("noise")?.1.to_vec());
    let mut traces: Vec<WindowRecord> = Vec::new();
    let audio = codec.detokenize_observed(codes, params, &mut noise, &mut |w| {
        traces.push(WindowRecord {
            codes: w.codes.iter().map(|&c| c as f32).collect(),
            vq_out: flat(&w.conditioning.vq_out).to_vec(),
            cond: flat(&w.conditioning.cond).to_vec(),
            mu: flat(&w.conditioning.mu).to_vec(),
            latents: w.latents.to_vec(),
            audio: w.audio.to_vec(),
        })
    })?;

    let mut checks = vec![];
    let seg_codes: Vec<f32> = case.i64("segment_codes")?.1.iter().map(|&c| c as f32).collect();
    let joined =
        |f: fn(&WindowRecord) -> &[f32]| traces.iter().flat_map(|w| f(w).iter().copied()).collect::<Vec<f32>>();
    checks.push(Check::compare(
        format!("{n}/segment_codes"),
        &joined(|w| &w.codes),
        &seg_codes,
        EXACT,
    ));
    for (name, get) in [
        ("vq_out", (|w| &w.vq_out) as fn(&WindowRecord) -> &[f32]),
        ("cond", |w| &w.cond),
        ("mu", |w| &w.mu),
    ] {
        checks.push(Check::compare(
            format!("{n}/{name}"),
            &joined(get),
            case.f32(name)?.1,
            TOL_RVQ,
        ));
    }
    let (ts_shape, ts) = case.f32("estimator_timesteps")?;
    let ours: Vec<f32> = (0..ts_shape[0])
        .flat_map(|_| euler_steps(params.flow.num_steps).into_iter().map(|s| s.0))
        .collect();
    checks.push(Check::compare(format!("{n}/estimator_timesteps"), &ours, ts, EXACT));
    checks.push(Check::compare(
        format!("{n}/latents"),
        &joined(|w| &w.latents),
        case.f32("latents")?.1,
        TOL_LATENTS,
    ));
    checks.push(Check::compare(
        format!("{n}/decode_out(own latents)"),
        &joined(|w| &w.audio),
        case.f32("decode_out")?.1,
        TOL_END_TO_END,
    ));
    checks.extend(check_recorded_latent_decode(codec, case, &n)?);
    checks.push(Check::compare(
        format!("{n}/waveform(end-to-end)"),
        &audio.samples,
        case.f32("waveform")?.1,
        TOL_END_TO_END,
    ));
    Ok(checks)
}

/// What one window produced, copied out of the observer.
struct WindowRecord {
    codes: Vec<f32>,
    vq_out: Vec<f32>,
    cond: Vec<f32>,
    mu: Vec<f32>,
    latents: Vec<f32>,
    audio: Vec<f32>,
}

/// Decodes the recorded `latents` `[S, 744, 256]` and cross-fades them: `decode_out`
/// and `waveform` at the tight decode tolerance.
fn check_recorded_latent_decode(codec: &mut Codec, case: &CaseTensors, n: &str) -> Result<Vec<Check>, CaseError> {
    let (shape, latents) = case.f32("latents")?;
    if shape.len() != 3 || shape[1] != WINDOW_LATENTS || shape[2] != codec.config().out_channels {
        return Err(case.shape_err("latents", shape, "[S, 744, out_channels]"));
    }
    let spl = codec.config().samples_per_latent();
    let (_, waveform) = case.f32("waveform")?;
    let mut decoded = Vec::new();
    let mut assembler = Assembler::new(2, OVERLAP_LATENTS * spl);
    for window in latents.chunks_exact(shape[1] * shape[2]) {
        let audio = codec.decode_latents(window)?;
        assembler.push(&audio);
        decoded.extend(audio);
    }
    let target = waveform.len() / 2;
    let wave = assembler.finish(target, codec.config().sample_rate);
    Ok(vec![
        Check::compare(
            format!("{n}/decode_out(recorded latents)"),
            &decoded,
            case.f32("decode_out")?.1,
            TOL_DECODE,
        ),
        Check::compare(
            format!("{n}/waveform(recorded latents)"),
            &wave.samples,
            waveform,
            TOL_DECODE,
        ),
    ])
}

fn flat(a: &ndarray::Array2<f32>) -> &[f32] {
    a.as_slice().expect("freshly computed arrays are contiguous")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_applies_atol_plus_rtol() {
        let c = Check::compare("x", &[1.0, 2.0], &[1.0005, 2.0], (1e-4, 1e-3));
        assert!(c.passed && (c.max_abs_err - 5e-4).abs() < 1e-6, "{c:?}");
        let c = Check::compare("x", &[1.0, 2.1], &[1.0, 2.0], (1e-4, 1e-3));
        assert_eq!((c.passed, c.violations), (false, 1));
        let c = Check::compare("x", &[1.0], &[1.0, 2.0], (1.0, 1.0));
        assert!(!c.passed && c.max_abs_err.is_infinite());
        let c = Check::compare("x", &[f32::NAN], &[1.0], (1.0, 1.0));
        assert!(!c.passed);
    }
}
