//! Conformance kinds `codec_rvq`, `codec_estimator`, `codec_scalar_decode` and
//! `codec_detokenize`, run on an opened codec engine (built from the fixture's
//! `heartcodec/` checkpoint).
//!
//! Each `check_*` function returns one [`Check`] per compared tensor at the
//! tolerances of the fixture's `recommended_tolerances`; [`run`] dispatches on the
//! case kind and folds the checks into the harness's [`CaseOutcome`]. Nothing here
//! depends on a particular fixture size.

use heart::fixture::{Case, CaseTensors, Fixture, Tolerance, allclose};
use ndarray::ArrayView2;

use super::{CaseError, CaseOutcome, CaseResult, Verdict};
use heart::geometry::{OVERLAP_LATENTS, WINDOW_LATENTS};
use heart_runtime::codec::geometry::euler_steps;
use heart_runtime::codec::{Assembler, Codec, DetokenizeParams, FlowParams, RecordedNoise, TailPolicy};

/// `recommended_tolerances` key for RVQ output, conditioning and `mu`.
pub const TOL_RVQ: &str = "codec_rvq_cond_mu";
/// Key for the estimator unit case.
pub const TOL_ESTIMATOR: &str = "codec_estimator_unit";
/// Key for flow latents given the recorded noise.
pub const TOL_LATENTS: &str = "codec_flow_latents_given_recorded_noise";
/// Key for decoding (and assembling) the recorded latents.
pub const TOL_DECODE: &str = "codec_decode_from_recorded_latents";
/// Key for the end-to-end waveform.
pub const TOL_END_TO_END: &str = "codec_waveform_end_to_end";

/// One compared tensor: passes iff every `|actual − expected| ≤ atol + rtol·|expected|`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Case-qualified tensor name, e.g. `codec_detok_T40_steps10/latents`.
    pub name: String,
    /// Largest absolute difference (infinite on length mismatch or NaN).
    pub max_abs_err: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Elements outside the tolerance.
    pub violations: usize,
    /// Whether everything is within tolerance and the lengths agree.
    pub passed: bool,
}

impl Check {
    /// Compares `actual` with `expected` element-wise at `tol`.
    pub fn compare(name: impl Into<String>, actual: &[f32], expected: &[f32], tol: Tolerance) -> Self {
        let c = allclose(actual, expected, tol.atol, tol.rtol);
        Self {
            name: name.into(),
            max_abs_err: c.max_abs_err,
            atol: tol.atol,
            rtol: tol.rtol,
            violations: c.n_bad,
            passed: c.ok,
        }
    }
}

/// Folds checks into a harness outcome: PASS iff there are checks and all pass;
/// the reported tolerance is the loosest used, the detail names failing tensors.
pub fn outcome(checks: &[Check]) -> CaseOutcome {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            format!(
                "{}: {} elements off, max_abs_err {:e}",
                c.name, c.violations, c.max_abs_err
            )
        })
        .collect();
    let loosest = checks
        .iter()
        .map(|c| Tolerance {
            atol: c.atol,
            rtol: c.rtol,
        })
        .fold(Tolerance::EXACT, |a, b| Tolerance {
            atol: a.atol.max(b.atol),
            rtol: a.rtol.max(b.rtol),
        });
    CaseOutcome {
        verdict: if failed.is_empty() && !checks.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        max_abs_err: checks.iter().map(|c| c.max_abs_err).reduce(f64::max),
        tol: Some(loosest),
        detail: if checks.is_empty() {
            "nothing was compared".into()
        } else {
            failed.join("; ")
        },
    }
}

/// Runs a codec case of any of the four kinds on `codec`.
pub fn run(codec: &mut Codec, fixture: &Fixture, case: &Case) -> CaseResult {
    let checks = match case.kind.as_str() {
        "codec_rvq" => check_rvq(codec, fixture, case)?,
        "codec_estimator" => check_estimator(codec, fixture, case)?,
        "codec_scalar_decode" => check_scalar_decode(codec, fixture, case)?,
        "codec_detokenize" => check_detokenize(codec, fixture, case)?,
        other => {
            return Err(CaseError::Case(format!(
                "case `{}`: `{other}` is not a codec kind",
                case.name
            )));
        }
    };
    Ok(outcome(&checks))
}

/// Detokenize settings of a case (`info.num_steps`, `info.guidance_scale`), with
/// upstream's tail policy so every length the fixture chose is reproduced.
pub fn detokenize_params(case: &Case) -> heart::Result<DetokenizeParams> {
    Ok(DetokenizeParams {
        flow: FlowParams {
            num_steps: case.info_usize("num_steps")?,
            guidance: case.info_f64("guidance_scale")? as f32,
        },
        tail: TailPolicy::UpstreamQuirk,
    })
}

/// `codec_rvq`: `vq_out`, `cond`, `mu` from `codes` `[Q, T]` (no padding).
pub fn check_rvq(codec: &Codec, fixture: &Fixture, case: &Case) -> Result<Vec<Check>, CaseError> {
    let t = fixture.load(case)?;
    let (codes, shape) = t.i64("codes")?;
    let codes = ArrayView2::from_shape((shape[0], shape[1]), &codes)?;
    let c = codec.tables().condition(codes)?;
    let tol = fixture.tolerance(TOL_RVQ)?;
    let n = &case.name;
    Ok(vec![
        Check::compare(format!("{n}/vq_out"), flat(&c.vq_out), &t.f32("vq_out")?.0, tol),
        Check::compare(format!("{n}/cond"), flat(&c.cond), &t.f32("cond")?.0, tol),
        Check::compare(format!("{n}/mu"), flat(&c.mu), &t.f32("mu")?.0, tol),
    ])
}

/// `codec_estimator`: the estimator graph on `input` `[B, S, C]` and `timestep` `[B]`.
pub fn check_estimator(codec: &mut Codec, fixture: &Fixture, case: &Case) -> Result<Vec<Check>, CaseError> {
    let t = fixture.load(case)?;
    let (input, shape) = t.f32("input")?;
    let (timestep, _) = t.f32("timestep")?;
    let v = codec.estimator().velocity(&input, shape[1], &timestep)?;
    let tol = fixture.tolerance(TOL_ESTIMATOR)?;
    Ok(vec![Check::compare(
        format!("{}/output", case.name),
        &v,
        &t.f32("output")?.0,
        tol,
    )])
}

/// `codec_scalar_decode`: the scalar decoder on `input` `[N, 128, T]`.
pub fn check_scalar_decode(codec: &mut Codec, fixture: &Fixture, case: &Case) -> Result<Vec<Check>, CaseError> {
    let t = fixture.load(case)?;
    let (input, shape) = t.f32("input")?;
    let out = codec.decoder().decode(&input, shape[0], shape[2])?;
    let tol = fixture.tolerance(TOL_DECODE)?;
    Ok(vec![Check::compare(
        format!("{}/output", case.name),
        &out,
        &t.f32("output")?.0,
        tol,
    )])
}

/// What one window produced, copied out of the detokenize observer.
#[derive(Default)]
struct Windows {
    codes: Vec<f32>,
    vq_out: Vec<f32>,
    cond: Vec<f32>,
    mu: Vec<f32>,
    latents: Vec<f32>,
    audio: Vec<f32>,
}

/// `codec_detokenize`: detokenize with the recorded noise, checking per-window
/// codes, conditioning, Euler times and latents; the decode and cross-fade of the
/// *recorded* latents at the tight decode tolerance; and this run's own audio at
/// the end-to-end tolerance (`round(9x)/9` flips make it loose by design).
pub fn check_detokenize(codec: &mut Codec, fixture: &Fixture, case: &Case) -> Result<Vec<Check>, CaseError> {
    let t = fixture.load(case)?;
    let params = detokenize_params(case)?;
    let (codes, shape) = t.i64("codes")?;
    let codes = ArrayView2::from_shape((shape[0], shape[1]), &codes)?;
    let mut noise = RecordedNoise::new(t.f32("noise")?.0);
    let mut w = Windows::default();
    let audio = codec.detokenize_observed(codes, params, &mut noise, &mut |win| {
        w.codes.extend(win.codes.iter().map(|&c| c as f32));
        w.vq_out.extend_from_slice(flat(&win.conditioning.vq_out));
        w.cond.extend_from_slice(flat(&win.conditioning.cond));
        w.mu.extend_from_slice(flat(&win.conditioning.mu));
        w.latents.extend_from_slice(win.latents);
        w.audio.extend_from_slice(win.audio);
    })?;

    let n = &case.name;
    let rvq = fixture.tolerance(TOL_RVQ)?;
    let e2e = fixture.tolerance(TOL_END_TO_END)?;
    let expected_codes: Vec<f32> = t.i64("segment_codes")?.0.iter().map(|&c| c as f32).collect();
    let (expected_times, times_shape) = t.f32("estimator_timesteps")?;
    let steps = euler_steps(params.flow.num_steps);
    let times: Vec<f32> = (0..times_shape[0]).flat_map(|_| steps.iter().map(|s| s.0)).collect();
    let mut checks = vec![
        Check::compare(
            format!("{n}/segment_codes"),
            &w.codes,
            &expected_codes,
            Tolerance::EXACT,
        ),
        Check::compare(format!("{n}/vq_out"), &w.vq_out, &t.f32("vq_out")?.0, rvq),
        Check::compare(format!("{n}/cond"), &w.cond, &t.f32("cond")?.0, rvq),
        Check::compare(format!("{n}/mu"), &w.mu, &t.f32("mu")?.0, rvq),
        Check::compare(
            format!("{n}/estimator_timesteps"),
            &times,
            &expected_times,
            Tolerance::EXACT,
        ),
        Check::compare(
            format!("{n}/latents"),
            &w.latents,
            &t.f32("latents")?.0,
            fixture.tolerance(TOL_LATENTS)?,
        ),
        Check::compare(
            format!("{n}/decode_out(own latents)"),
            &w.audio,
            &t.f32("decode_out")?.0,
            e2e,
        ),
    ];
    checks.extend(decode_recorded_latents(codec, fixture, &t, n)?);
    checks.push(Check::compare(
        format!("{n}/waveform(end-to-end)"),
        &audio.samples,
        &t.f32("waveform")?.0,
        e2e,
    ));
    Ok(checks)
}

/// Decodes the recorded `latents` `[S, 744, out_channels]` window by window and
/// cross-fades them: `decode_out` and `waveform` at the decode tolerance.
fn decode_recorded_latents(
    codec: &mut Codec,
    fixture: &Fixture,
    t: &CaseTensors,
    n: &str,
) -> Result<Vec<Check>, CaseError> {
    let (latents, shape) = t.f32("latents")?;
    let latent = codec.config().out_channels;
    if shape.len() != 3 || shape[1] != WINDOW_LATENTS || shape[2] != latent {
        return Err(CaseError::Case(format!(
            "{n}: latents have shape {shape:?}, expected [S, {WINDOW_LATENTS}, {latent}]"
        )));
    }
    let (waveform, wave_shape) = t.f32("waveform")?;
    let spl = codec.config().samples_per_latent();
    let mut decoded = Vec::new();
    let mut assembler = Assembler::new(2, OVERLAP_LATENTS * spl);
    for window in latents.chunks_exact(WINDOW_LATENTS * latent) {
        let audio = codec.decode_latents(window)?;
        assembler.push(&audio);
        decoded.extend(audio);
    }
    let wave = assembler.finish(wave_shape[1], codec.config().sample_rate);
    let tol = fixture.tolerance(TOL_DECODE)?;
    Ok(vec![
        Check::compare(
            format!("{n}/decode_out(recorded latents)"),
            &decoded,
            &t.f32("decode_out")?.0,
            tol,
        ),
        Check::compare(format!("{n}/waveform(recorded latents)"), &wave.samples, &waveform, tol),
    ])
}

fn flat(a: &ndarray::Array2<f32>) -> &[f32] {
    a.as_slice().expect("freshly computed arrays are contiguous")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance { atol: 1e-4, rtol: 1e-3 };

    #[test]
    fn compare_applies_atol_plus_rtol() {
        let c = Check::compare("x", &[1.0, 2.0], &[1.0005, 2.0], TOL);
        assert!(c.passed && (c.max_abs_err - 5e-4).abs() < 1e-6, "{c:?}");
        let c = Check::compare("x", &[1.0, 2.1], &[1.0, 2.0], TOL);
        assert_eq!((c.passed, c.violations), (false, 1));
        assert!(!Check::compare("x", &[1.0], &[1.0, 2.0], TOL).passed);
        assert!(!Check::compare("x", &[f32::NAN], &[1.0], TOL).passed);
    }

    #[test]
    fn outcome_fails_on_any_failed_or_no_check() {
        let ok = Check::compare("a", &[1.0], &[1.0], TOL);
        let bad = Check::compare("b", &[1.0], &[2.0], Tolerance::EXACT);
        let o = outcome(std::slice::from_ref(&ok));
        assert_eq!((o.verdict, o.max_abs_err), (Verdict::Pass, Some(0.0)));
        let o = outcome(&[ok, bad]);
        assert_eq!((o.verdict, o.tol), (Verdict::Fail, Some(TOL)));
        assert!(o.detail.starts_with("b: 1 elements off"), "{}", o.detail);
        assert_eq!(outcome(&[]).verdict, Verdict::Fail);
    }
}
