//! Shared by the `spec_*` tests: draft engines of the tiny-a model (exported
//! once per test binary) and the fixture's case prompts.

use std::path::Path;
use std::sync::OnceLock;

use heart::checkpoint::Checkpoint;
use heart::fixture::Fixture;
use heart::precision::Precision;
use heart_backend::SessionConfig;
use heart_runtime::lm::{HeartMula, LmFiles, Prompt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Draft engines a test can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draft {
    /// The first backbone layer and the first decoder layer, fp32 (an
    /// early-exit draft: far from the target, so many rejections).
    EarlyExit,
    /// The whole model at fp16 (close to the target).
    Fp16,
    /// The fp32 target itself (every code accepted up to float noise).
    Same,
    /// fp32 graphs of the checkpoint with every weight perturbed by 2% of its
    /// tensor's RMS (~90% of greedy codes agree with the target: exercises
    /// drafts completing a partly rejected frame).
    Perturbed,
}

/// Sessions on one thread: the tiny graphs are dominated by per-call overhead,
/// which a second thread only adds to.
const SESSIONS: SessionConfig = SessionConfig {
    intra_threads: 1,
    optimization: heart_backend::Optimization::All,
    memory_pattern: true,
};

/// Opens the fp32 target.
pub fn target() -> HeartMula {
    open(LmFiles::target(crate::lm_engine(Precision::Fp32)))
}

fn open(files: LmFiles) -> HeartMula {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let (cfg, gen_cfg) = crate::mula_configs();
    HeartMula::open_files(&rt, &files, &cfg, &gen_cfg, &SESSIONS).unwrap()
}

/// Opens a draft of the target.
pub fn draft(kind: Draft) -> HeartMula {
    let target_dir = crate::lm_engine(Precision::Fp32);
    let files = match kind {
        Draft::EarlyExit => LmFiles {
            tables: target_dir.join(heart::engine::LM_TABLES),
            ..LmFiles::draft(early_exit_engine())
        },
        Draft::Fp16 => LmFiles::target(crate::lm_engine(Precision::Fp16)),
        Draft::Same => LmFiles::target(target_dir),
        Draft::Perturbed => LmFiles {
            tables: target_dir.join(heart::engine::LM_TABLES),
            ..LmFiles::target(perturbed_engine())
        },
    };
    open(files)
}

/// A folder whose `draft/` holds the one-layer backbone and decoder graphs.
fn early_exit_engine() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let draft = dir.path().join(heart::engine::DRAFT_DIR);
        std::fs::create_dir(&draft).unwrap();
        let ckpt = Checkpoint::open(&crate::fixture().join("heartmula")).unwrap();
        let (mut cfg, _) = crate::mula_configs();
        cfg.backbone.num_layers = 1;
        cfg.decoder.num_layers = 1;
        let opts = onnx_export::lm::LmOptions::for_precision(Precision::Fp32);
        onnx_export::lm::export_backbone(&ckpt, &cfg, &opts, &draft.join(heart::engine::BACKBONE_GRAPH)).unwrap();
        onnx_export::lm::export_decoder(&ckpt, &cfg, &opts, &draft.join(heart::engine::DECODER_GRAPH)).unwrap();
        dir
    })
    .path()
}

/// Relative size of [`Draft::Perturbed`]'s weight noise.
const PERTURBATION: f32 = 0.02;

/// An fp32 engine of the fixture checkpoint with perturbed weights.
fn perturbed_engine() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ckpt_dir = dir.path().join("ckpt");
        std::fs::create_dir(&ckpt_dir).unwrap();
        let bytes = std::fs::read(crate::fixture().join("heartmula/model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let mut w: Vec<f32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
                for x in &mut w {
                    *x += PERTURBATION * rms * rng.sample::<f32, _>(StandardNormal);
                }
                (name, bytemuck::cast_slice(&w).to_vec(), t.shape().to_vec())
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, data, shape)| (n.clone(), TensorView::new(Dtype::F32, shape.clone(), data).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &ckpt_dir.join("model.safetensors")).unwrap();
        let ckpt = Checkpoint::open(&ckpt_dir).unwrap();
        let (cfg, _) = crate::mula_configs();
        onnx_export::lm::export_lm(&ckpt, &cfg, Precision::Fp32, dir.path()).unwrap();
        dir
    })
    .path()
}

/// The prompt of a fixture case.
pub fn prompt(case: &str) -> Prompt {
    let fixture = Fixture::open(&crate::fixture()).unwrap();
    let case = fixture.case(case).unwrap();
    heart_runtime::lm::Prompt::from_fixture(&fixture.load(case).unwrap()).unwrap()
}
