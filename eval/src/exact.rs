//! The exactness gate (`heart-eval exact`): is a quantized engine computing
//! what its format says?
//!
//! The reference is the engine's **simulation** (`heart-build simulate`): the
//! same checkpoint and build profile exported with every quantized weight
//! replaced by its reference quantize → dequantize values (computed in f32,
//! stored at the engine's compute dtype, as the engine's dequantization rounds
//! them) and the activations quantized with the engine's own calibrated
//! scales. Computing in the engine's dtype keeps the activation quantizers'
//! inputs the same on both sides: on the synthesized tiny model's W4A4 engine
//! the largest logit error over 4 prompts is 0.33 against an fp16 simulation
//! and 0.47 against an f32 one. The
//! simulation generates with seeded sampling; the engine is teacher-forced on
//! its codes. Per step the relative error `‖engine − sim‖ / ‖sim‖` of the
//! guided logits of every codebook, the backbone hidden state and every layer's
//! residual stream (both folders tapped) is measured; with codecs, the
//! simulation's codes are decoded by both with identical noise and the
//! waveforms compared. Every quantity's **median** error over the steps must
//! be within its tolerance (the mean and largest are reported): a wrong
//! weight, scale or packing changes every step, while rounding noise that an
//! ill-conditioned step amplifies (a near-tie in a softmax) changes few. On
//! the realistic synthesized model even an fp16 build of the same weights
//! differs from the fp32 one by a logit cosine of 0.989 at its worst step and
//! 0.9995 on average, so a gate on the largest error would gate the model's
//! conditioning rather than the engine.
//!
//! # Tolerances (derived from the precisions, not measured on a model)
//!
//! What may separate engine and simulation is the rounding of the engine's
//! arithmetic: an operation whose output is rounded to the compute dtype adds
//! a relative error of at most `u` (unit roundoff: fp32 `2⁻²⁴`, fp16 `2⁻¹¹`;
//! both accumulate dot products in f32). The simulation computes in the
//! engine's compute dtype, so this is what differs where their kernels
//! differ. Where activations are fake-quantized (W4A4, W8A8), a compute error
//! `u` moves an input across a rounding boundary of the activation format
//! with probability about `u/δ` (δ: the format's relative step: NVFP4 `1/3`
//! of the block amax, E4M3 `2⁻³`), and the flip costs one step: a mean-square
//! relative error of `u·δ`, so the per-operation error becomes `e = √(u·δ)`.
//! `MatMulNBits` at accuracy level 4 rounds each 32-element activation block
//! to int8 inside the kernel; the simulation reproduces that quantizer in the
//! graph (both sides agree to f32 rounding where no decision flips), but a
//! last-bit difference flips a decision, a flip persists in the KV cache and
//! perturbs later layers enough to flip more, so the difference is bounded by
//! the int8 rounding itself: `e = 2⁻⁸` (half a step of 1/127 of the block's
//! amax).
//!
//! Independent per-operation errors add as a random walk: after `n`
//! operations the expected relative error is `e·√n`. A transformer layer has
//! [`OPS_PER_LAYER`] operations on its residual path (two norms, q/k/v/o
//! projections, RoPE, two attention products and the softmax, w1/w3, the
//! SwiGLU product, w2, two residual adds); a quantity that depends on `L`
//! layers (the decoder's counted after the backbone's, plus one for the heads)
//! gets `n = OPS_PER_LAYER · (L + 1)`. The tolerance is [`SAFETY`] times that
//! expectation: `tol = SAFETY · e · √n`. The codec's waveform gets the same
//! rule with `n` = its estimator layers × flow steps plus its decoder's
//! convolutions, counted from its config.

use std::fmt::Write as _;

use heart::precision::Precision;
use heart::prompt::{PromptBuilder, TextTokenizer};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::EvalError;
use super::ab::{AbOptions, Engine, Recorder, load_prompts};
use super::metrics::relative_error;
use heart_backend::OrtRuntime;
use heart_runtime::codec::{DetokenizeParams, SeededNoise as CodecNoise};
use heart_runtime::lm::tapped::{ForcedCodes, GraphKind};
use heart_runtime::lm::{GenParams, Prompt, Sampling, SeededNoise};

/// Operations on a transformer layer's residual path that round their output.
pub const OPS_PER_LAYER: usize = 14;
/// Tolerance = `SAFETY` × the expected random-walk error (a 4σ-style margin:
/// a sum of many independent roundings exceeds four times its standard
/// deviation with probability below 1e-4).
pub const SAFETY: f64 = 4.0;
/// The profile-name suffix of simulations (`heart-build simulate`).
pub const SIMULATION_SUFFIX: &str = ".simulation";

/// The precision a tolerance is derived from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoiseModel {
    /// What rounds: e.g. `fp16 compute`, `f32 compute, int8 activation blocks (accuracy level 4)`.
    pub arithmetic: String,
    /// Its unit roundoff `u`.
    pub unit_roundoff: f64,
    /// Fake-quantized activations and their relative step δ, if any.
    pub activations: Option<(String, f64)>,
    /// The per-operation error `e` (`u`, or `√(u·δ)` with fake-quantized activations).
    pub per_op: f64,
}

impl NoiseModel {
    /// `SAFETY · e · √ops`.
    pub fn tolerance(&self, ops: usize) -> f64 {
        SAFETY * self.per_op * (ops as f64).sqrt()
    }
}

/// One compared quantity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantity {
    /// `logits.c3`, `hidden`, `backbone.layer_1`, `audio`.
    pub name: String,
    /// Relative error per step.
    pub rel_error: StepErrors,
    /// Operations it depends on (`n` of the module doc).
    pub ops: usize,
    /// The tolerance on the largest error.
    pub tolerance: f64,
    /// `rel_error.median <= tolerance`.
    pub pass: bool,
}

/// The exactness report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExactReport {
    /// The engine folder.
    pub engine: String,
    /// The simulation folder.
    pub simulation: String,
    /// The engine's build profile.
    pub profile: String,
    /// Prompts compared.
    pub prompts: usize,
    /// Teacher-forced frames compared.
    pub frames: usize,
    /// The LM's noise model.
    pub lm: NoiseModel,
    /// The codec's noise model (both folders with a codec).
    pub codec: Option<NoiseModel>,
    /// Every compared quantity.
    pub quantities: Vec<Quantity>,
    /// Every quantity within its tolerance.
    pub pass: bool,
}

impl ExactReport {
    /// The terminal / Markdown table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# heart-eval exact: {} against its simulation\n", self.profile);
        let _ = writeln!(s, "- engine: `{}`\n- simulation: `{}`", self.engine, self.simulation);
        let _ = writeln!(s, "- {} prompts, {} teacher-forced frames", self.prompts, self.frames);
        let noise = |m: &NoiseModel| {
            let acts = m
                .activations
                .as_ref()
                .map(|(f, d)| format!(", {f} activations (δ = {d:.3e})"))
                .unwrap_or_default();
            format!(
                "{} (u = {:.3e}){acts}: e = {:.3e} per operation",
                m.arithmetic, m.unit_roundoff, m.per_op
            )
        };
        let _ = writeln!(s, "- LM: {}", noise(&self.lm));
        if let Some(c) = &self.codec {
            let _ = writeln!(s, "- codec: {}", noise(c));
        }
        let _ = writeln!(s, "- tolerance = {SAFETY} · e · √ops\n");
        let _ = writeln!(
            s,
            "| quantity | ops | rel. error median | mean | max | tolerance (median) | |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
        for q in &self.quantities {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3e} | {:.3e} | {:.3e} | {:.3e} | {} |",
                q.name,
                q.ops,
                q.rel_error.median,
                q.rel_error.mean,
                q.rel_error.max,
                q.tolerance,
                if q.pass { "ok" } else { "FAIL" }
            );
        }
        let _ = writeln!(
            s,
            "\n{}",
            if self.pass {
                "PASS: the engine computes what its format stores, within its arithmetic's rounding"
            } else {
                "FAIL: the engine differs from its format's reference by more than its arithmetic's rounding"
            }
        );
        s
    }
}

/// The `[lm]` keys of a build profile the noise model needs.
#[derive(Deserialize)]
struct ProfileLm {
    compute: Precision,
    #[serde(default)]
    weights: Option<String>,
    #[serde(default)]
    activations: Option<String>,
    #[serde(default)]
    accuracy_level: Option<i64>,
}

#[derive(Deserialize)]
struct ProfileText {
    lm: ProfileLm,
}

/// Unit roundoff of a compute dtype.
fn unit_roundoff(p: Precision) -> f64 {
    match p {
        Precision::Fp16 => 2f64.powi(-11),
        _ => 2f64.powi(-24),
    }
}

/// The LM's noise model from the engine's build profile text (see the module doc).
pub fn lm_noise(profile_text: &str, source: &str) -> Result<NoiseModel, EvalError> {
    let p: ProfileText = toml::from_str(profile_text)
        .map_err(|e| EvalError::Input(format!("{source}: the recorded build profile does not parse: {e}")))?;
    let int_weights = matches!(p.lm.weights.as_deref(), Some("int4" | "int8"));
    let level4 = int_weights && p.lm.accuracy_level.unwrap_or(4) == 4;
    let (arithmetic, u) = if level4 {
        (
            "f32 compute, int8 activation blocks (accuracy level 4)".to_string(),
            2f64.powi(-8),
        )
    } else {
        (format!("{} compute", p.lm.compute), unit_roundoff(p.lm.compute))
    };
    let activations = match p.lm.activations.as_deref() {
        Some("nvfp4") => Some(("nvfp4".to_string(), 1.0 / 3.0)),
        Some("fp8") => Some(("fp8".to_string(), 2f64.powi(-3))),
        _ => None,
    };
    let per_op = activations.as_ref().map_or(u, |(_, d)| (u * d).sqrt());
    Ok(NoiseModel {
        arithmetic,
        unit_roundoff: u,
        activations,
        per_op,
    })
}

/// The codec's noise model at its precision.
pub fn codec_noise(precision: Precision) -> NoiseModel {
    let u = unit_roundoff(precision);
    NoiseModel {
        arithmetic: format!("{precision} codec"),
        unit_roundoff: u,
        activations: None,
        per_op: u,
    }
}

/// Per-quantity errors of every step.
struct Errors {
    logits: Vec<Vec<f64>>,
    hidden: Vec<f64>,
    backbone: Vec<Vec<f64>>,
    decoder: Vec<Vec<f64>>,
    audio: Vec<f64>,
}

/// Summary of one quantity's per-step errors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepErrors {
    /// Steps compared.
    pub count: usize,
    /// The median step's error (what is gated).
    pub median: f64,
    /// Mean error.
    pub mean: f64,
    /// Largest error.
    pub max: f64,
}

impl StepErrors {
    fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
        };
        Self {
            count: n,
            median,
            mean: if n == 0 {
                0.0
            } else {
                sorted.iter().sum::<f64>() / n as f64
            },
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// Runs the exactness comparison: `opts.a` is the simulation, `opts.b` the
/// engine; the simulation samples with `opts.sampler` and `opts.seed`.
pub fn run_exact(rt: &OrtRuntime, opts: &AbOptions) -> Result<ExactReport, EvalError> {
    opts.sampler.validate()?;
    let mut sim = Engine::open(rt, &opts.a, &opts.sessions)?;
    let mut eng = Engine::open(rt, &opts.b, &opts.sessions)?;
    let profile = check_pair(&sim, &eng)?;
    let lm = lm_noise(&profile.text, &opts.b.display().to_string())?;
    let codec = match (&sim.codec, &eng.codec) {
        (Some(_), Some(_)) => Some(codec_noise(eng.manifest.codec_precision.unwrap_or(Precision::Fp32))),
        (None, Some(_)) => {
            return Err(EvalError::Input(format!(
                "{} has a codec and its simulation {} has none: simulate with --codec",
                opts.b.display(),
                opts.a.display()
            )));
        }
        _ => None,
    };
    let taps = sim.has_layer_taps()? && eng.has_layer_taps()?;
    if taps {
        sim.tap_layers()?;
        eng.tap_layers()?;
    }
    let model = sim.manifest.model.clone();
    let (l_bb, l_dec) = (model.backbone.num_layers, model.decoder.num_layers);
    let mut err = Errors {
        logits: vec![Vec::new(); model.audio_num_codebooks],
        hidden: Vec::new(),
        backbone: vec![Vec::new(); if taps { l_bb } else { 0 }],
        decoder: vec![Vec::new(); if taps { l_dec } else { 0 }],
        audio: Vec::new(),
    };
    let set = load_prompts(&opts.prompts)?;
    let tokenizer = TextTokenizer::from_file(&sim.dir.join(heart::engine::TOKENIZER))?;
    let builder = PromptBuilder::new(&tokenizer, sim.manifest.gen_config, model.audio_num_codebooks);
    let params = GenParams {
        cfg_scale: opts.cfg_scale,
        max_audio_length_ms: opts.frames as u64 * heart::geometry::FRAME_MS,
    };
    let mut used = 0;
    for (index, p) in set
        .prompts()
        .iter()
        .enumerate()
        .take(opts.max_prompts.unwrap_or(usize::MAX))
    {
        let prompt = Prompt::from(&builder.build(&p.tags, &p.lyrics, opts.cfg_scale)?);
        if prompt.len() + opts.frames > model.backbone.max_seq_len {
            continue;
        }
        let seed = opts.seed + index as u64;
        let mut noise = SeededNoise::new(seed);
        let mut rec_sim = Recorder::default();
        let generation = {
            let mut picker = Sampling {
                params: opts.sampler,
                noise: &mut noise,
            };
            sim.lm.run(&prompt, &params, &mut picker, &mut rec_sim)?
        };
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if let Some(f) = rec_sim
            .frames
            .iter()
            .find(|f| !finite(&f.hidden) || !f.logits.iter().all(|l| finite(l)))
        {
            return Err(EvalError::Input(format!(
                "the simulation {} produced non-finite values at frame {} of prompt `{}`: the model overflows \
                 the profile's compute dtype ({}), so no engine of this profile can be checked on it",
                opts.a.display(),
                f.index,
                p.name,
                lm.arithmetic
            )));
        }
        let forced: Vec<Vec<i64>> = rec_sim.frames.iter().map(|f| f.codes.clone()).collect();
        let mut rec_eng = Recorder::default();
        eng.lm
            .run(&prompt, &params, &mut ForcedCodes { frames: &forced }, &mut rec_eng)?;
        for (fs, fe) in rec_sim.frames.iter().zip(&rec_eng.frames).filter(|(f, _)| f.kept) {
            for (k, (ls, le)) in fs.logits.iter().zip(&fe.logits).enumerate() {
                err.logits[k].push(relative_error(ls, le));
            }
            err.hidden.push(relative_error(&fs.hidden, &fe.hidden));
        }
        for ((graph, ts), (_, te)) in rec_sim.taps.iter().zip(&rec_eng.taps) {
            let layers = match graph {
                GraphKind::Backbone => &mut err.backbone,
                GraphKind::Decoder => &mut err.decoder,
            };
            for (l, (x, y)) in layers.iter_mut().zip(ts.iter().zip(te)) {
                l.push(relative_error(x, y));
            }
        }
        if let (Some(cs), Some(ce)) = (sim.codec.as_mut(), eng.codec.as_mut()) {
            let codes = generation.codes_by_codebook();
            let frames = codes.first().map_or(0, Vec::len);
            let flat: Vec<i64> = codes.iter().flatten().copied().collect();
            let codes = Array2::from_shape_vec((codes.len(), frames), flat)
                .map_err(|e| EvalError::Input(format!("codes are not rectangular: {e}")))?;
            let dp = DetokenizeParams::default();
            let ws = cs.detokenize(codes.view(), dp, &mut CodecNoise::new(seed))?;
            let we = ce.detokenize(codes.view(), dp, &mut CodecNoise::new(seed))?;
            err.audio.push(relative_error(&ws.samples, &we.samples));
        }
        used += 1;
    }
    if used == 0 {
        return Err(EvalError::Input(format!(
            "no prompt of {} fits the model's context with {} frames",
            set.path().display(),
            opts.frames
        )));
    }
    let ops = |layers: usize| OPS_PER_LAYER * (layers + 1);
    let mut quantities = Vec::new();
    let mut push = |name: String, r: &[f64], ops: usize, noise: &NoiseModel| {
        let rel_error = StepErrors::of(r);
        let tolerance = noise.tolerance(ops);
        quantities.push(Quantity {
            name,
            rel_error,
            ops,
            tolerance,
            pass: rel_error.median <= tolerance,
        });
    };
    for (k, r) in err.logits.iter().enumerate() {
        let depth = if k == 0 { l_bb } else { l_bb + l_dec };
        push(format!("logits.c{k}"), r, ops(depth), &lm);
    }
    push("hidden".into(), &err.hidden, ops(l_bb), &lm);
    for (i, r) in err.backbone.iter().enumerate() {
        push(format!("backbone.layer_{i}"), r, ops(i + 1), &lm);
    }
    for (i, r) in err.decoder.iter().enumerate() {
        push(format!("decoder.layer_{i}"), r, ops(l_bb + i + 1), &lm);
    }
    if let (Some(noise), Some(cfg)) = (&codec, &sim.manifest.codec) {
        let steps = DetokenizeParams::default().flow.num_steps;
        let n = cfg.num_layers + cfg.num_layers_2;
        let convs = 4 * (cfg.upsample_factors.len() + 2);
        push("audio".into(), &err.audio, OPS_PER_LAYER * n * steps + convs, noise);
    }
    let pass = quantities.iter().all(|q| q.pass);
    Ok(ExactReport {
        engine: opts.b.display().to_string(),
        simulation: opts.a.display().to_string(),
        profile: profile.name.trim_end_matches(SIMULATION_SUFFIX).to_string(),
        prompts: used,
        frames: err.hidden.len(),
        lm,
        codec,
        quantities,
        pass,
    })
}

/// The simulation must stand for the engine's build: same profile text, model
/// and checkpoint weights. Returns the simulation's profile entry.
fn check_pair(sim: &Engine, eng: &Engine) -> Result<heart::manifest::ProfileEntry, EvalError> {
    let input = |m: String| Err(EvalError::Input(m));
    let (Some(ps), Some(pe)) = (&sim.manifest.build_profile, &eng.manifest.build_profile) else {
        return input(format!(
            "{} and {} must both record a build profile (built by heart-build)",
            sim.dir.display(),
            eng.dir.display()
        ));
    };
    if ps.name != format!("{}{SIMULATION_SUFFIX}", pe.name) || ps.sha256 != pe.sha256 {
        return input(format!(
            "{} (profile `{}`) is not a simulation of {} (profile `{}`); build one with \
             `heart-build simulate --engine {} --mula CHECKPOINT --out DIR`",
            sim.dir.display(),
            ps.name,
            eng.dir.display(),
            pe.name,
            eng.dir.display()
        ));
    }
    if sim.manifest.model != eng.manifest.model || sim.weights_sha256() != eng.weights_sha256() {
        return input(format!(
            "{} and {} were built from different checkpoints (model config or weights SHA-256 differ)",
            sim.dir.display(),
            eng.dir.display()
        ));
    }
    Ok(ps.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_models_follow_the_profile() {
        let fp4 = lm_noise("[lm]\ncompute = \"fp16\"\nweights = \"nvfp4\"\n", "t").unwrap();
        assert_eq!(fp4.per_op, 2f64.powi(-11));
        let w4a4 = lm_noise(
            "[lm]\ncompute = \"fp16\"\nweights = \"nvfp4\"\nactivations = \"nvfp4\"\n",
            "t",
        )
        .unwrap();
        assert!((w4a4.per_op - (2f64.powi(-11) / 3.0).sqrt()).abs() < 1e-12);
        let int4 = lm_noise("[lm]\ncompute = \"fp32\"\nweights = \"int4\"\n", "t").unwrap();
        assert_eq!(int4.per_op, 2f64.powi(-8), "accuracy level 4 is the default");
        let int4_l0 = lm_noise(
            "[lm]\ncompute = \"fp32\"\nweights = \"int4\"\naccuracy_level = 0\n",
            "t",
        )
        .unwrap();
        assert_eq!(int4_l0.per_op, 2f64.powi(-24));
        assert!((fp4.tolerance(84) - 4.0 * 2f64.powi(-11) * 84f64.sqrt()).abs() < 1e-15);
        let err = lm_noise("[lm]\ncompute = 3\n", "engines/x").unwrap_err().to_string();
        assert!(err.contains("engines/x") && err.contains("compute"), "{err}");
    }
}
