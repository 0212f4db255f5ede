//! The speculative-decoding draft built alongside the target: a cheaper engine
//! of the same model in `<engine>/draft/` (`backbone.onnx`, `decoder.onnx`),
//! which reads the engine's own `lm_tables.safetensors`.
//!
//! Two ways to make it cheaper, combinable: a lower precision
//! (`--draft-precision`), and early exit (`--draft-backbone-layers N`: the
//! first `N` backbone layers, then the backbone's final norm and
//! `codebook0_head`; `--draft-decoder-layers M` likewise for the decoder). Early
//! exit reuses the checkpoint's own norm and heads, untrained for the shallower
//! stack, so its acceptance rate is low; it is there to measure, and for
//! checkpoints with early-exit heads.

use std::path::Path;

use crate::error::{BuildError, Context, Result};
use heart::checkpoint::Checkpoint;
use heart::config::MulaConfig;
use heart::engine;
use heart::manifest::{EngineKind, FileEntry};
use heart::precision::Precision;
use onnx_export::external::WrittenFile;
use onnx_export::lm::GraphForm;

/// Draft options of `heart-build` (`--draft-precision`,
/// `--draft-backbone-layers`, `--draft-decoder-layers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DraftArgs {
    /// Draft weight precision (default: the target's).
    pub precision: Option<Precision>,
    /// Backbone layers kept (default: all).
    pub backbone_layers: Option<usize>,
    /// Decoder layers kept (default: all).
    pub decoder_layers: Option<usize>,
}

/// A validated draft build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftPlan {
    /// Weight precision of the draft graphs.
    pub precision: Precision,
    /// Backbone layers kept.
    pub backbone_layers: usize,
    /// Decoder layers kept.
    pub decoder_layers: usize,
}

impl std::fmt::Display for DraftPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} backbone / {} decoder layers",
            self.precision, self.backbone_layers, self.decoder_layers
        )
    }
}

/// The draft `args` ask for, checked against the model; `None` when no draft
/// option was given.
pub fn plan(args: &DraftArgs, target: Precision, cfg: &MulaConfig) -> Result<Option<DraftPlan>> {
    if *args == DraftArgs::default() {
        return Ok(None);
    }
    let layers = |asked: Option<usize>, total: usize, flag: &str| -> Result<usize> {
        match asked {
            None => Ok(total),
            Some(n) if (1..=total).contains(&n) => Ok(n),
            Some(n) => Err(BuildError::Request(format!(
                "--{flag} {n}: the model has {total} such layers; keep between 1 and {total}"
            ))),
        }
    };
    let plan = DraftPlan {
        precision: args.precision.unwrap_or(target),
        backbone_layers: layers(args.backbone_layers, cfg.backbone.num_layers, "draft-backbone-layers")?,
        decoder_layers: layers(args.decoder_layers, cfg.decoder.num_layers, "draft-decoder-layers")?,
    };
    let full = plan.backbone_layers == cfg.backbone.num_layers && plan.decoder_layers == cfg.decoder.num_layers;
    if full && plan.precision == target {
        return Err(BuildError::Request(format!(
            "the requested draft ({plan}) is the target itself; choose a cheaper --draft-precision or fewer \
             --draft-backbone-layers"
        )));
    }
    Ok(Some(plan))
}

/// The draft's model configuration: `cfg` with the layers the draft keeps.
pub fn config(cfg: &MulaConfig, plan: &DraftPlan) -> MulaConfig {
    let mut cut = cfg.clone();
    cut.backbone.num_layers = plan.backbone_layers;
    cut.decoder.num_layers = plan.decoder_layers;
    cut
}

/// Exports the draft graphs in `form` into `<engine_dir>/draft/`; returns the files written.
pub fn export(
    ckpt: &Checkpoint,
    cfg: &MulaConfig,
    plan: &DraftPlan,
    form: GraphForm,
    engine_dir: &Path,
) -> Result<Vec<WrittenFile>> {
    let dir = engine_dir.join(engine::DRAFT_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cut = config(cfg, plan);
    let opts = onnx_export::lm::LmOptions::for_precision(plan.precision)
        .in_form(form)
        .with_context(|| format!("the {form} form of the draft ({plan})"))?;
    let (mut files, _) = onnx_export::lm::export_backbone(ckpt, &cut, &opts, &dir.join(engine::BACKBONE_GRAPH))
        .context("exporting the draft backbone")?;
    let (decoder, _) = onnx_export::lm::export_decoder(ckpt, &cut, &opts, &dir.join(engine::DECODER_GRAPH))
        .context("exporting the draft decoder")?;
    files.extend(decoder);
    Ok(files)
}

/// Records the draft precision on the manifest entries of the draft graphs.
pub fn record_precision(files: &mut [FileEntry], plan: &DraftPlan) {
    for f in files
        .iter_mut()
        .filter(|f| matches!(f.kind, EngineKind::DraftBackbone | EngineKind::DraftDecoder))
    {
        f.precision = Some(plan.precision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MulaConfig {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/heartmula");
        MulaConfig::from_file(&dir.join("config.json")).unwrap()
    }

    #[test]
    fn plans_default_to_the_target_precision_and_all_layers() {
        let c = cfg();
        assert_eq!(plan(&DraftArgs::default(), Precision::Fp32, &c).unwrap(), None);
        let fp16 = DraftArgs {
            precision: Some(Precision::Fp16),
            ..DraftArgs::default()
        };
        assert_eq!(
            plan(&fp16, Precision::Fp32, &c).unwrap(),
            Some(DraftPlan {
                precision: Precision::Fp16,
                backbone_layers: 3,
                decoder_layers: 2
            })
        );
        let early = DraftArgs {
            backbone_layers: Some(1),
            ..DraftArgs::default()
        };
        let p = plan(&early, Precision::Fp32, &c).unwrap().unwrap();
        assert_eq!(
            (p.precision, p.backbone_layers, p.decoder_layers),
            (Precision::Fp32, 1, 2)
        );
    }

    #[test]
    fn useless_or_impossible_drafts_are_refused() {
        let c = cfg();
        let same = DraftArgs {
            precision: Some(Precision::Fp32),
            ..DraftArgs::default()
        };
        let err = plan(&same, Precision::Fp32, &c).unwrap_err().to_string();
        assert!(err.contains("is the target itself"), "{err}");
        let deep = DraftArgs {
            backbone_layers: Some(4),
            ..DraftArgs::default()
        };
        let err = plan(&deep, Precision::Fp32, &c).unwrap_err().to_string();
        assert!(err.contains("--draft-backbone-layers 4: the model has 3"), "{err}");
        let none = DraftArgs {
            decoder_layers: Some(0),
            ..DraftArgs::default()
        };
        assert!(plan(&none, Precision::Fp32, &c).is_err());
        let fp4 = DraftArgs {
            precision: Some(Precision::Fp4),
            ..DraftArgs::default()
        };
        let fp4 = plan(&fp4, Precision::Fp32, &c).unwrap().unwrap();
        assert_eq!(fp4.precision, Precision::Fp4, "NVFP4 drafts export now");
    }
}
