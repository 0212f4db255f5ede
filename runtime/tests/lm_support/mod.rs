//! Shared by the `lm_*` tests: the committed tiny-a fixture and engines exported
//! from its HeartMuLa checkpoint (once per test binary and precision).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use heart::config::{GenConfig, MulaConfig};
use heart::precision::Precision;
use heart_runtime::lm::{HeartMula, SessionConfig};

/// The committed fixture set.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a")
}

/// The fixture's model and generation configs.
pub fn configs() -> (MulaConfig, GenConfig) {
    let dir = fixture().join("heartmula");
    (
        MulaConfig::from_file(&dir.join("config.json")).unwrap(),
        GenConfig::from_file(&dir.join("gen_config.json")).unwrap(),
    )
}

/// An engine folder exported from the fixture checkpoint at `precision`.
pub fn engine(precision: Precision) -> &'static Path {
    static FP32: OnceLock<tempfile::TempDir> = OnceLock::new();
    static FP16: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cell = match precision {
        Precision::Fp16 => &FP16,
        _ => &FP32,
    };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = heart::checkpoint::Checkpoint::open(&fixture().join("heartmula")).unwrap();
        let (cfg, _) = configs();
        onnx_export::lm::export_lm(&ckpt, &cfg, precision, dir.path()).unwrap();
        dir
    })
    .path()
}

/// An opened engine at `precision`.
pub fn open(precision: Precision) -> HeartMula {
    let rt = heart_runtime::ort_env::init(None).expect("run scripts/setup-ort.sh first");
    let (cfg, gen_cfg) = configs();
    HeartMula::open(&rt, engine(precision), &cfg, &gen_cfg, &SessionConfig::default()).unwrap()
}
