//! The quality A/B of two engine folders built from the same model: B is
//! measured against A on identical prompts, codes and noise.
//!
//! Per prompt:
//! 1. **A generates** `frames` frames with seeded top-k sampling (seed
//!    `seed + prompt index`), recording the guided logits it sampled from, its
//!    hidden states and (when both engines have them) every layer's tap.
//! 2. **B is teacher-forced** on A's kept codes, so both see the same inputs
//!    at every step. Per codebook: cosine of the guided logits, `KL(A‖B)` of
//!    the sampling distributions ([`metrics::sampling_kl`]) and top-1
//!    agreement; relative error of the backbone hidden state and of each
//!    layer's residual stream (where it goes wrong).
//! 3. **Free-running greedy** (top-k 1) on both: the fraction of identical
//!    frames and the first frame that differs.
//! 4. **Audio**, when both folders have a codec: A's codes decoded by each
//!    codec with the same seeded noise (A at `flow_steps` Euler steps, B at
//!    `b_flow_steps`); the SNR, log-mel and multi-resolution STFT distances of
//!    B's waveform against A's ([`crate::audio_metrics`]).

use std::path::{Path, PathBuf};

use heart::manifest::{Manifest, Verify};
use heart::prompt::{PromptBuilder, TextTokenizer};
use heart::quant::calibration::CalibrationSet;
use ndarray::Array2;

use super::EvalError;
use super::audio_metrics::{log_mel_distance_db, mr_stft_distance};
use super::metrics::{Running, argmax, cosine, relative_error, sampling_kl, snr_db};
use super::report::{AbReport, CodebookStats, GreedyStats, LayerErrors, PromptSkip};
use heart_backend::{OrtRuntime, SessionConfig};
use heart_runtime::codec::{Codec, DetokenizeParams};
use heart_runtime::engine::EngineFolder;
use heart_runtime::lm::tapped::{ForcedCodes, GraphKind, TapObserver, TapStep, TappedFrame, TappedLm};
use heart_runtime::lm::{GenParams, LmError, Prompt, SamplerParams, Sampling, SeededNoise};

/// What to compare and how.
#[derive(Debug, Clone, PartialEq)]
pub struct AbOptions {
    /// The reference engine folder.
    pub a: PathBuf,
    /// The engine folder under test.
    pub b: PathBuf,
    /// A calibration-format prompt set: a folder with `prompts.toml`, or the file.
    pub prompts: PathBuf,
    /// Use at most this many prompts (file order).
    pub max_prompts: Option<usize>,
    /// Frames A generates per prompt after the first.
    pub frames: usize,
    /// LM guidance scale.
    pub cfg_scale: f32,
    /// Temperature and top-k of A's sampling and of the KL's distributions.
    pub sampler: SamplerParams,
    /// Base seed of A's sampling and of the codec noise.
    pub seed: u64,
    /// Session options of both engines.
    pub sessions: SessionConfig,
    /// Euler steps of A's codec.
    pub flow_steps: usize,
    /// Euler steps of B's codec (A's when `None`).
    pub b_flow_steps: Option<usize>,
}

/// One opened engine folder.
pub(super) struct Engine {
    pub(super) dir: PathBuf,
    pub(super) manifest: Manifest,
    pub(super) lm: TappedLm,
    pub(super) codec: Option<Codec>,
}

impl Engine {
    pub(super) fn open(rt: &OrtRuntime, dir: &Path, sessions: &SessionConfig) -> Result<Self, EvalError> {
        let folder = EngineFolder::open(rt, dir, Verify::Quick)?;
        let lm = TappedLm::new(folder.lm(sessions)?);
        let codec = match folder.manifest().codec {
            Some(_) => Some(folder.codec()?),
            None => None,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest: folder.manifest().clone(),
            lm,
            codec,
        })
    }

    /// Taps every layer of both graphs.
    pub(super) fn tap_layers(&mut self) -> Result<(), LmError> {
        let (bb, dec) = (
            self.manifest.model.backbone.num_layers,
            self.manifest.model.decoder.num_layers,
        );
        let names = |n: usize| (0..n).map(heart::engine::io::layer_tap).collect::<Vec<_>>();
        self.lm.set_taps(GraphKind::Backbone, names(bb))?;
        self.lm.set_taps(GraphKind::Decoder, names(dec))
    }

    pub(super) fn has_layer_taps(&self) -> Result<bool, EvalError> {
        let tap = heart::engine::io::layer_tap(0);
        for kind in [GraphKind::Backbone, GraphKind::Decoder] {
            if !self.lm.outputs(kind)?.contains(&tap) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// SHA-256 of the LM weights the folder was built from, if recorded.
    pub(super) fn weights_sha256(&self) -> Vec<&str> {
        let inputs = self.manifest.inputs.iter();
        inputs
            .filter(|i| i.role == "mula_weights")
            .map(|i| i.sha256.as_str())
            .collect()
    }
}

/// Records a run: its frames and every step's taps.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) frames: Vec<TappedFrame>,
    pub(super) taps: Vec<(GraphKind, Vec<Vec<f32>>)>,
}

impl TapObserver for Recorder {
    fn step(&mut self, step: &TapStep<'_>) -> Result<(), LmError> {
        if !step.values.is_empty() {
            self.taps.push((step.graph, step.values.to_vec()));
        }
        Ok(())
    }

    fn frame(&mut self, frame: &TappedFrame) -> Result<(), LmError> {
        self.frames.push(frame.clone());
        Ok(())
    }
}

/// Running sums of every comparison.
struct Accumulators {
    cosine: Vec<Running>,
    kl: Vec<Running>,
    top1: Vec<Running>,
    hidden: Running,
    backbone_layers: Vec<Running>,
    decoder_layers: Vec<Running>,
    greedy_agreement: Running,
    greedy_per_frame: Vec<Running>,
    first_divergence: Running,
    greedy_identical: usize,
    snr: Running,
    snr_identical: usize,
    log_mel: Running,
    mr_stft: Running,
}

impl Accumulators {
    fn new(codebooks: usize, layers: (usize, usize)) -> Self {
        Self {
            cosine: vec![Running::default(); codebooks],
            kl: vec![Running::default(); codebooks],
            top1: vec![Running::default(); codebooks],
            hidden: Running::default(),
            backbone_layers: vec![Running::default(); layers.0],
            decoder_layers: vec![Running::default(); layers.1],
            greedy_agreement: Running::default(),
            greedy_per_frame: Vec::new(),
            first_divergence: Running::default(),
            greedy_identical: 0,
            snr: Running::default(),
            snr_identical: 0,
            log_mel: Running::default(),
            mr_stft: Running::default(),
        }
    }
}

/// Runs the A/B; the report's checks are filled in by the caller.
pub fn run_ab(rt: &OrtRuntime, opts: &AbOptions) -> Result<AbReport, EvalError> {
    opts.sampler.validate()?;
    let mut a = Engine::open(rt, &opts.a, &opts.sessions)?;
    let mut b = Engine::open(rt, &opts.b, &opts.sessions)?;
    check_same_model(&a, &b)?;
    let layer_taps = a.has_layer_taps()? && b.has_layer_taps()?;
    if layer_taps {
        a.tap_layers()?;
        b.tap_layers()?;
    }
    let set = load_prompts(&opts.prompts)?;
    let tokenizer = TextTokenizer::from_file(&a.dir.join(heart::engine::TOKENIZER))?;
    let model = &a.manifest.model;
    let builder = PromptBuilder::new(&tokenizer, a.manifest.gen_config, model.audio_num_codebooks);
    let layers = if layer_taps {
        (model.backbone.num_layers, model.decoder.num_layers)
    } else {
        (0, 0)
    };
    let mut acc = Accumulators::new(model.audio_num_codebooks, layers);
    let mut skipped = Vec::new();
    let mut used = 0;
    let limit = opts.max_prompts.unwrap_or(usize::MAX);
    let max_seq = model.backbone.max_seq_len;
    for (index, p) in set.prompts().iter().enumerate().take(limit) {
        let prompt = Prompt::from(&builder.build(&p.tags, &p.lyrics, opts.cfg_scale)?);
        if prompt.len() + opts.frames > max_seq {
            skipped.push(PromptSkip {
                name: p.name.clone(),
                reason: format!(
                    "{} prompt rows + {} frames exceed max_seq_len {max_seq}",
                    prompt.len(),
                    opts.frames
                ),
            });
            continue;
        }
        compare_prompt(&mut a, &mut b, &prompt, opts, opts.seed + index as u64, &mut acc)?;
        used += 1;
        tracing::info!(prompt = %p.name, "compared");
    }
    if used == 0 {
        return Err(EvalError::Input(format!(
            "no prompt of {} fits the model's context with {} frames",
            set.path().display(),
            opts.frames
        )));
    }
    Ok(report(&a, &b, set.sha256(), used, skipped, &acc, layer_taps))
}

/// Teacher-forced, greedy and audio comparisons of one prompt.
fn compare_prompt(
    a: &mut Engine,
    b: &mut Engine,
    prompt: &Prompt,
    opts: &AbOptions,
    seed: u64,
    acc: &mut Accumulators,
) -> Result<(), EvalError> {
    let params = gen_params(opts, opts.frames);
    let mut noise = SeededNoise::new(seed);
    let mut rec_a = Recorder::default();
    let generation = {
        let mut picker = Sampling {
            params: opts.sampler,
            noise: &mut noise,
        };
        a.lm.run(prompt, &params, &mut picker, &mut rec_a)?
    };
    // B replays every frame A produced, its dropped end frame included, with
    // the same parameters: both caches grow alike and B stops where A did.
    let forced: Vec<Vec<i64>> = rec_a.frames.iter().map(|f| f.codes.clone()).collect();
    let mut rec_b = Recorder::default();
    b.lm.run(prompt, &params, &mut ForcedCodes { frames: &forced }, &mut rec_b)?;
    for (fa, fb) in rec_a.frames.iter().zip(&rec_b.frames).filter(|(f, _)| f.kept) {
        for (k, (la, lb)) in fa.logits.iter().zip(&fb.logits).enumerate() {
            acc.cosine[k].push(cosine(la, lb));
            acc.kl[k].push(sampling_kl(la, lb, opts.sampler));
            acc.top1[k].push(f64::from(u8::from(argmax(la) == argmax(lb))));
        }
        acc.hidden.push(relative_error(&fa.hidden, &fb.hidden));
    }
    for ((graph, ta), (_, tb)) in rec_a.taps.iter().zip(&rec_b.taps) {
        let layers = match graph {
            GraphKind::Backbone => &mut acc.backbone_layers,
            GraphKind::Decoder => &mut acc.decoder_layers,
        };
        for (l, (x, y)) in layers.iter_mut().zip(ta.iter().zip(tb)) {
            l.push(relative_error(x, y));
        }
    }
    compare_greedy(a, b, prompt, opts, acc)?;
    compare_audio(a, b, &generation.codes_by_codebook(), (seed, opts), acc)
}

/// Free-running greedy runs of both engines.
fn compare_greedy(
    a: &mut Engine,
    b: &mut Engine,
    prompt: &Prompt,
    opts: &AbOptions,
    acc: &mut Accumulators,
) -> Result<(), EvalError> {
    let params = gen_params(opts, opts.frames);
    let greedy = SamplerParams {
        top_k: 1,
        ..opts.sampler
    };
    let run = |e: &mut Engine| -> Result<Vec<Vec<i64>>, LmError> {
        let mut noise = SeededNoise::new(0);
        let mut picker = Sampling {
            params: greedy,
            noise: &mut noise,
        };
        Ok(e.lm.run(prompt, &params, &mut picker, &mut Recorder::default())?.frames)
    };
    let (ga, gb) = (run(a)?, run(b)?);
    let same = ga.iter().zip(&gb).filter(|(x, y)| x == y).count();
    let frames = ga.len().max(gb.len());
    acc.greedy_agreement.push(same as f64 / frames.max(1) as f64);
    if acc.greedy_per_frame.len() < frames {
        acc.greedy_per_frame.resize(frames, Running::default());
    }
    for (i, r) in acc.greedy_per_frame.iter_mut().enumerate().take(frames) {
        r.push(f64::from(u8::from(ga.get(i) == gb.get(i))));
    }
    match ga.iter().zip(&gb).position(|(x, y)| x != y) {
        Some(i) => acc.first_divergence.push(i as f64),
        None if ga.len() != gb.len() => acc.first_divergence.push(ga.len().min(gb.len()) as f64),
        None => acc.greedy_identical += 1,
    }
    Ok(())
}

/// A's codes through both codecs with the same noise.
fn compare_audio(
    a: &mut Engine,
    b: &mut Engine,
    codes: &[Vec<i64>],
    (seed, opts): (u64, &AbOptions),
    acc: &mut Accumulators,
) -> Result<(), EvalError> {
    let (Some(ca), Some(cb)) = (a.codec.as_mut(), b.codec.as_mut()) else {
        return Ok(());
    };
    let frames = codes.first().map_or(0, Vec::len);
    let flat: Vec<i64> = codes.iter().flatten().copied().collect();
    let codes = Array2::from_shape_vec((codes.len(), frames), flat)
        .map_err(|e| EvalError::Input(format!("codes are not rectangular: {e}")))?;
    let params = |steps: usize| {
        let mut p = DetokenizeParams::default();
        p.flow.num_steps = steps;
        p
    };
    let b_steps = opts.b_flow_steps.unwrap_or(opts.flow_steps);
    let noise = || heart_runtime::codec::SeededNoise::new(seed);
    let wa = ca.detokenize(codes.view(), params(opts.flow_steps), &mut noise())?;
    let wb = cb.detokenize(codes.view(), params(b_steps), &mut noise())?;
    match snr_db(&wa.samples, &wb.samples) {
        Some(db) => acc.snr.push(db),
        None => acc.snr_identical += 1,
    }
    let channels = usize::from(wa.channels);
    acc.log_mel
        .push(log_mel_distance_db(&wa.samples, &wb.samples, channels, wa.sample_rate));
    acc.mr_stft
        .push(mr_stft_distance(&wa.samples, &wb.samples, channels, wa.sample_rate));
    Ok(())
}

/// Loop parameters for `frames` frames after the first.
fn gen_params(opts: &AbOptions, frames: usize) -> GenParams {
    GenParams {
        cfg_scale: opts.cfg_scale,
        max_audio_length_ms: frames as u64 * heart::geometry::FRAME_MS,
    }
}

/// The two folders must describe the same model and ids.
fn check_same_model(a: &Engine, b: &Engine) -> Result<(), EvalError> {
    let (ma, mb) = (&a.manifest, &b.manifest);
    if ma.model != mb.model || ma.gen_config != mb.gen_config {
        return Err(EvalError::Input(format!(
            "{} and {} were built from different model configurations; an A/B needs one model at two precisions",
            a.dir.display(),
            b.dir.display()
        )));
    }
    if a.weights_sha256() != b.weights_sha256() {
        tracing::warn!(
            a = %a.dir.display(),
            b = %b.dir.display(),
            "the engines were built from different checkpoint weights"
        );
    }
    Ok(())
}

/// Reads a prompt set from a folder (its `prompts.toml`) or a prompts file.
pub fn load_prompts(path: &Path) -> Result<CalibrationSet, EvalError> {
    if path.is_dir() {
        return Ok(CalibrationSet::load(path)?);
    }
    let bytes = std::fs::read(path).map_err(|source| heart::Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(CalibrationSet::parse(path, &bytes)?)
}

fn report(
    a: &Engine,
    b: &Engine,
    prompts_sha256: &str,
    prompts: usize,
    skipped: Vec<PromptSkip>,
    acc: &Accumulators,
    layer_taps: bool,
) -> AbReport {
    let codebooks = (0..acc.cosine.len())
        .map(|k| CodebookStats {
            codebook: k,
            cosine: acc.cosine[k].summary(),
            kl: acc.kl[k].summary(),
            top1_agreement: acc.top1[k].summary().mean,
        })
        .collect();
    let label = |e: &Engine| {
        let profile = e.manifest.build_profile.as_ref().map(|p| p.name.clone());
        (
            e.dir.display().to_string(),
            profile.unwrap_or_else(|| e.manifest.precision.to_string()),
        )
    };
    let ((a_dir, a_profile), (b_dir, b_profile)) = (label(a), label(b));
    let has_codecs = a.codec.is_some() && b.codec.is_some();
    AbReport {
        a: a_dir,
        b: b_dir,
        a_profile,
        b_profile,
        same_checkpoint: a.weights_sha256() == b.weights_sha256(),
        prompts_sha256: prompts_sha256.to_string(),
        prompts,
        skipped,
        frames: acc.hidden.summary().count,
        codebooks,
        hidden_rel_error: acc.hidden.summary(),
        layers: layer_taps.then(|| LayerErrors {
            backbone: acc.backbone_layers.iter().map(Running::summary).collect(),
            decoder: acc.decoder_layers.iter().map(Running::summary).collect(),
        }),
        greedy: GreedyStats {
            agreement: acc.greedy_agreement.summary().mean,
            identical_prompts: acc.greedy_identical,
            first_divergence: acc.first_divergence.summary(),
            per_frame: acc.greedy_per_frame.iter().map(|r| r.summary().mean).collect(),
        },
        audio_snr_db: has_codecs.then(|| acc.snr.summary()),
        audio_identical: acc.snr_identical,
        budget: None,
        relative_to_fp8: None,
        audio_log_mel_db: has_codecs.then(|| acc.log_mel.summary()),
        audio_mr_stft: has_codecs.then(|| acc.mr_stft.summary()),
        gate: None,
        checks: Vec::new(),
        pass: true,
    }
}
