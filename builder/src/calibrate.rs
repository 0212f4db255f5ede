//! The calibration run: the higher-precision (fp32) model generates a few
//! frames per calibration prompt and the input of every activation-quantized
//! linear layer is recorded; the statistics become the static activation
//! scales of the quantized engine.
//!
//! 1. An fp32 variant of the LM graphs whose quantized groups expose their
//!    linear inputs as `probe.*` outputs is exported to a temporary folder.
//! 2. Per prompt (seeded sampling, seed `seed + i`, `frames_per_prompt`
//!    frames after the prompt's) every backbone and decoder step's probes are
//!    read: per token row the amax is kept, and a [`RowSample`] keeps
//!    `mse_rows` whole rows per probe (the largest plus a seeded uniform sample).
//! 3. Per linear three candidate amax values are computed: the **max**; the
//!    **percentile** of the per-row amax values (nearest rank); the **mse**
//!    choice (see [`crate::scales`]). The profile's `method` picks the one
//!    exported.
//!
//! The statistics are written as `calibration.json` into the engine folder
//! (all three values per linear, so the choice can be audited), and the
//! manifest records its SHA-256 and the prompt set's.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{BuildError, Context, Result};
use heart::layout::MulaCheckpoint;
use heart::manifest::CalibrationEntry;
use heart::quant::calibration::CalibrationSet;
use heart_backend::SessionConfig;
use heart_runtime::lm::tapped::{GraphKind, TapObserver, TapStep, TappedLm};
use heart_runtime::lm::{GenParams, HeartMula, LmError, Prompt, SamplerParams, Sampling, SeededNoise};
use onnx_export::external::WrittenFile;
use onnx_export::linears::Activations;
use onnx_export::lm::{GraphForm, LmOptions, ProbeSite, QuantFormat, numerics};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::profile::Profile;
use crate::scales::{RowSample, mse_amax, percentile};
use heart::profile::{CalibrationSettings, Method};

/// The prompt set used when `--calibration` is not given.
pub const DEFAULT_SET: &str = "calibration";

/// Version of the `calibration.json` layout.
pub const STATS_FORMAT: u32 = 1;

/// The statistics of one linear layer's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearStats {
    /// The probe (graph output) it was read from; linears sharing an input share it.
    pub probe: String,
    /// Input features.
    pub features: usize,
    /// Token rows seen.
    pub rows: usize,
    /// Largest |x|.
    pub max: f32,
    /// The percentile of per-row amax values.
    pub percentile: f32,
    /// The MSE-optimal amax.
    pub mse: f32,
    /// The value exported (by the profile's method).
    pub amax: f32,
}

/// The `calibration.json` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationStats {
    /// [`STATS_FORMAT`].
    pub format: u32,
    /// The method that chose `amax`.
    pub method: String,
    /// The percentile used for `percentile`.
    pub percentile: f64,
    /// The activation format the MSE search quantized to.
    pub activation_format: String,
    /// The prompts file.
    pub prompts_file: String,
    /// Its SHA-256.
    pub prompts_sha256: String,
    /// Prompts run.
    pub prompts_used: usize,
    /// Prompts skipped (too long for the model's context), by name.
    pub skipped: Vec<String>,
    /// Frames generated per prompt after the first.
    pub frames_per_prompt: usize,
    /// Base seed.
    pub seed: u64,
    /// Guidance scale, temperature and top-k of the run.
    pub sampling: (f32, f32, usize),
    /// Per linear layer (checkpoint name without `.weight`).
    pub linears: BTreeMap<String, LinearStats>,
}

impl CalibrationStats {
    /// The exported amax per linear.
    pub fn amax(&self) -> BTreeMap<String, f32> {
        self.linears.iter().map(|(k, v)| (k.clone(), v.amax)).collect()
    }
}

/// What is recorded per probe while the model runs.
struct ProbeRecord {
    site: ProbeSite,
    row_amax: Vec<f32>,
    sample: RowSample,
}

/// Collects the probes of both graphs.
struct Collector {
    backbone: Vec<ProbeRecord>,
    decoder: Vec<ProbeRecord>,
    rng: ChaCha8Rng,
}

impl TapObserver for Collector {
    fn step(&mut self, step: &TapStep<'_>) -> Result<(), LmError> {
        let records = match step.graph {
            GraphKind::Backbone => &mut self.backbone,
            GraphKind::Decoder => &mut self.decoder,
        };
        for (rec, values) in records.iter_mut().zip(step.values) {
            for row in values.chunks_exact(rec.site.features) {
                let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                rec.row_amax.push(amax);
                rec.sample.push(row, amax, &mut self.rng);
            }
        }
        Ok(())
    }
}

/// Runs the calibration of `mula` over `set` for the linears of `template`'s
/// quantized groups, quantizing activations to `format`.
pub fn calibrate(
    mula: &MulaCheckpoint,
    template: &LmOptions,
    format: QuantFormat,
    settings: &CalibrationSettings,
    set: &CalibrationSet,
    progress: &dyn Fn(usize, usize),
) -> Result<CalibrationStats> {
    let tmp = tempfile::tempdir().context("creating a temporary folder for the calibration graphs")?;
    let opts = LmOptions {
        numerics: numerics(heart::precision::Precision::Fp32),
        quant: None,
        probes: template.quant.as_ref().map(|q| q.groups.clone()).unwrap_or_default(),
        layer_taps: false,
        form: GraphForm::Cpu,
    };
    let export = onnx_export::lm::export_lm_with(&mula.checkpoint, &mula.config, &opts, tmp.path())
        .context("exporting the fp32 calibration graphs")?;
    let rt = heart_backend::init(None)?;
    let lm = HeartMula::open(
        &rt,
        tmp.path(),
        &mula.config,
        &mula.gen_config,
        &SessionConfig::default(),
    )
    .context("opening the calibration graphs")?;
    let mut lm = TappedLm::new(lm);
    let outputs = |sites: &[ProbeSite]| sites.iter().map(|s| s.output.clone()).collect();
    lm.set_taps(GraphKind::Backbone, outputs(&export.backbone_probes))?;
    lm.set_taps(GraphKind::Decoder, outputs(&export.decoder_probes))?;
    let record = |sites: Vec<ProbeSite>| {
        sites
            .into_iter()
            .map(|site| ProbeRecord {
                site,
                row_amax: Vec::new(),
                sample: RowSample::new(settings.mse_rows),
            })
            .collect()
    };
    let mut collector = Collector {
        backbone: record(export.backbone_probes),
        decoder: record(export.decoder_probes),
        rng: ChaCha8Rng::seed_from_u64(settings.seed),
    };
    let builder = mula.prompt_builder();
    let params = GenParams {
        cfg_scale: settings.cfg_scale,
        max_audio_length_ms: settings.frames_per_prompt as u64 * heart::geometry::FRAME_MS,
    };
    let sampler = SamplerParams {
        temperature: settings.temperature,
        top_k: settings.topk,
    };
    let limit = if settings.max_prompts == 0 {
        usize::MAX
    } else {
        settings.max_prompts
    };
    let prompts: Vec<_> = set.prompts().iter().take(limit).collect();
    let (mut used, mut skipped) = (0, Vec::new());
    for (i, p) in prompts.iter().enumerate() {
        progress(i, prompts.len());
        let prompt = Prompt::from(&builder.build(&p.tags, &p.lyrics, settings.cfg_scale)?);
        if prompt.len() + settings.frames_per_prompt > mula.config.backbone.max_seq_len {
            skipped.push(p.name.clone());
            continue;
        }
        let mut noise = SeededNoise::new(settings.seed + i as u64);
        let mut picker = Sampling {
            params: sampler,
            noise: &mut noise,
        };
        lm.run(&prompt, &params, &mut picker, &mut collector)
            .with_context(|| format!("calibration prompt `{}`", p.name))?;
        used += 1;
    }
    if used == 0 {
        return Err(BuildError::Request(format!(
            "no calibration prompt of {} fits the model's context ({} positions)",
            set.path().display(),
            mula.config.backbone.max_seq_len
        )));
    }
    let records = collector.backbone.into_iter().chain(collector.decoder);
    let mut linears = BTreeMap::new();
    for rec in records {
        let stats = summarize(&rec, format, settings)?;
        for linear in &rec.site.linears {
            linears.insert(linear.clone(), stats.clone());
        }
    }
    Ok(CalibrationStats {
        format: STATS_FORMAT,
        method: settings.method.as_str().to_string(),
        percentile: settings.percentile,
        activation_format: format!("{format:?}").to_lowercase(),
        prompts_file: set.path().display().to_string(),
        prompts_sha256: set.sha256().to_string(),
        prompts_used: used,
        skipped,
        frames_per_prompt: settings.frames_per_prompt,
        seed: settings.seed,
        sampling: (settings.cfg_scale, settings.temperature, settings.topk),
        linears,
    })
}

/// The three candidate amax values of one probe, and the chosen one.
fn summarize(rec: &ProbeRecord, format: QuantFormat, settings: &CalibrationSettings) -> Result<LinearStats> {
    let max = rec.row_amax.iter().copied().fold(0f32, f32::max);
    if !(max > 0.0 && max.is_finite()) {
        return Err(BuildError::Request(format!(
            "calibration: `{}` saw amax {max} over {} rows; its activations cannot be scaled",
            rec.site.output,
            rec.row_amax.len()
        )));
    }
    let percentile = percentile(&rec.row_amax, settings.percentile);
    let mse = mse_amax(&rec.sample, rec.site.features, max, format, settings.mse_candidates)?;
    let amax = match settings.method {
        Method::Max => max,
        Method::Percentile => percentile,
        Method::Mse => mse,
    };
    Ok(LinearStats {
        probe: rec.site.output.clone(),
        features: rec.site.features,
        rows: rec.row_amax.len(),
        max,
        percentile,
        mse,
        amax,
    })
}

/// The LM export options of a build, with calibrated activation scales when
/// the profile quantizes activations.
pub struct PreparedLm {
    /// Options to export the engine's LM graphs with.
    pub options: LmOptions,
    /// The statistics file written into the engine folder, if any.
    pub stats_file: Option<WrittenFile>,
    /// The manifest's record of the calibration, if any.
    pub entry: Option<CalibrationEntry>,
}

/// Runs the calibration `profile` needs (prompt set `calibration`, default
/// [`DEFAULT_SET`]), writes the statistics into `engine_dir` and returns the
/// export options; a weight-only or dense profile passes straight through.
pub fn prepare(
    profile: &Profile,
    calibration: Option<&Path>,
    layer_taps: bool,
    mula: &MulaCheckpoint,
    engine_dir: &Path,
    progress: &dyn Fn(usize, usize),
) -> Result<PreparedLm> {
    let mut options = LmOptions {
        layer_taps,
        ..profile.options.clone()
    };
    let (Some(settings), Some(format), Some(plan)) =
        (&profile.calibration, profile.activations, options.quant.as_mut())
    else {
        return Ok(PreparedLm {
            options,
            stats_file: None,
            entry: None,
        });
    };
    let dir = calibration.unwrap_or(Path::new(DEFAULT_SET));
    let set = CalibrationSet::load(dir).with_context(|| {
        format!(
            "profile `{}` quantizes activations and needs a calibration prompt set \
             (--calibration DIR, default `{DEFAULT_SET}`)",
            profile.entry.name
        )
    })?;
    let stats = calibrate(mula, &profile.options, format, settings, &set, progress)?;
    plan.activations = Some(Activations {
        format,
        amax: stats.amax(),
    });
    let path = engine_dir.join(heart::engine::CALIBRATION);
    write_stats(&stats, &path)?;
    let entry = CalibrationEntry {
        prompts: set.path().display().to_string(),
        prompts_sha256: set.sha256().to_string(),
        method: stats.method.clone(),
        stats: heart::engine::CALIBRATION.to_string(),
        stats_sha256: heart::manifest::sha256_file(&path)?,
    };
    Ok(PreparedLm {
        options,
        stats_file: Some(WrittenFile {
            bytes: std::fs::metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .len(),
            path,
        }),
        entry: Some(entry),
    })
}

/// Writes the statistics as pretty JSON to `path`.
pub fn write_stats(stats: &CalibrationStats, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(stats)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
