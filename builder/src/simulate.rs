//! `heart-build simulate`: the simulation of a quantized engine folder,
//! the reference `heart-eval exact` checks that engine against.
//!
//! The engine's build profile (recorded in its manifest) is rebuilt from the
//! same checkpoint with
//! - the engine's compute dtype (so activation quantizers see the inputs the
//!   engine's do);
//! - every quantized weight replaced by its reference quantize → dequantize
//!   values ([`onnx_export::quant::reference`]): what the format stores,
//!   computed by `heart::quant`, none of the engine's packing or in-graph
//!   dequantization;
//! - activations fake-quantized (W4A4, W8A8) with the engine's own calibrated
//!   amax values, read from its `calibration.json` (no second calibration run);
//! - the codec at fp32, every layer tapped (`tap.layer_*`).
//!
//! The folder's manifest names the profile `<engine profile>.simulation` and
//! keeps the engine profile's text and SHA-256, so `heart-eval exact` can tell
//! which engine build a simulation stands for.

use std::path::Path;

use crate::error::{BuildError, Context, Result};
use heart::manifest::{CalibrationEntry, Manifest, Verify};
use onnx_export::linears::{Activations, Lowering};
use onnx_export::lm::LmOptions;

use crate::calibrate::{CalibrationStats, PreparedLm};
use crate::profile::Profile;
use heart::profile::BuildProfile;

/// Suffix of a simulation's profile name in its manifest.
pub const PROFILE_SUFFIX: &str = ".simulation";

/// What a simulation build needs beyond an ordinary build's arguments.
pub struct Simulation {
    /// The simulation's profile (reference lowering).
    pub profile: Profile,
    /// The engine's calibration statistics, when its profile quantizes activations.
    pub stats: Option<(CalibrationStats, CalibrationEntry)>,
}

/// Reads the engine's profile and calibration and turns them into the simulation's.
pub fn plan(engine: &Path) -> Result<Simulation> {
    let manifest = Manifest::load(engine, Verify::Quick)
        .with_context(|| format!("reading the engine to simulate, {}", engine.display()))?;
    let Some(entry) = &manifest.build_profile else {
        return Err(BuildError::Request(format!(
            "{}: the manifest records no build profile, so there is no format to simulate",
            engine.join(heart::manifest::MANIFEST_FILE).display()
        )));
    };
    let source = format!(
        "{} (build_profile)",
        engine.join(heart::manifest::MANIFEST_FILE).display()
    );
    let mut profile = Profile::from_build(BuildProfile::parse(&entry.name, &source, &entry.text)?);
    let Some(plan) = profile.options.quant.as_mut() else {
        return Err(BuildError::Request(format!(
            "{}: profile `{}` quantizes nothing; compare it with `heart-eval ab` against an fp32 build instead",
            engine.display(),
            entry.name
        )));
    };
    plan.lowering = Lowering::Reference;
    let stats = match profile.activations {
        None => None,
        Some(format) => {
            let cal = manifest.calibration.clone().ok_or_else(|| {
                BuildError::Request(format!(
                    "{}: profile `{}` quantizes activations but the manifest records no calibration",
                    engine.display(),
                    entry.name
                ))
            })?;
            let path = engine.join(&cal.stats);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let stats: CalibrationStats = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a calibration statistics file", path.display()))?;
            plan.activations = Some(Activations {
                format,
                amax: stats.amax(),
            });
            Some((stats, cal))
        }
    };
    profile.build.calibration = None;
    profile.build.entry.name = format!("{}{PROFILE_SUFFIX}", entry.name);
    profile.build.entry.source = format!("simulation of {}", engine.display());
    Ok(Simulation { profile, stats })
}

/// The LM export options of a simulation build: its profile's options with
/// layer taps, and the engine's statistics copied into `dir`.
pub fn prepare(sim: &Simulation, layer_taps: bool, dir: &Path) -> Result<PreparedLm> {
    let options = LmOptions {
        layer_taps,
        ..sim.profile.options.clone()
    };
    let Some((stats, entry)) = &sim.stats else {
        return Ok(PreparedLm {
            options,
            stats_file: None,
            entry: None,
        });
    };
    let path = dir.join(heart::engine::CALIBRATION);
    crate::calibrate::write_stats(stats, &path)?;
    Ok(PreparedLm {
        options,
        stats_file: Some(onnx_export::external::WrittenFile {
            bytes: std::fs::metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .len(),
            path: path.clone(),
        }),
        entry: Some(CalibrationEntry {
            stats_sha256: heart::manifest::sha256_file(&path)?,
            ..entry.clone()
        }),
    })
}
