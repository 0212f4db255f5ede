//! Model case kinds (`mula_*`, `codec_*`) run on an engine folder built by
//! `heart-build` from the fixture's own checkpoints.
//!
//! The engine folder is opened through its manifest like `heart-run` opens it,
//! and its recorded build inputs must be the fixture's checkpoint files (same
//! SHA-256): conformance of engines built from anything else would be
//! meaningless. Sessions are opened on first use and shared by the cases.

use std::path::{Path, PathBuf};

use heart::fixture::Case;
use heart::manifest::{self, Manifest, Verify};
use heart::precision::Precision;

use super::{CaseError, CaseOutcome, CaseResult, ConformContext, codec, mula};
use heart_backend::SessionConfig;
use heart_runtime::codec::Codec;
use heart_runtime::engine::EngineFolder;
use heart_runtime::lm::HeartMula;

/// An engine folder and the sessions opened on it so far.
pub struct EngineSet {
    dir: PathBuf,
    manifest: Manifest,
    folder: EngineFolder,
    lm: Option<HeartMula>,
    codec: Option<Codec>,
}

impl std::fmt::Debug for EngineSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSet")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EngineSet {
    /// Opens `dir` (manifest verified) and loads ONNX Runtime with its
    /// sessions on `backend`.
    pub fn open(dir: &Path, backend: heart_backend::BackendChoice) -> Result<Self, CaseError> {
        let rt = heart_backend::init(None)?.with_backend(backend);
        let folder = EngineFolder::open(&rt, dir, Verify::Quick)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest: folder.manifest().clone(),
            folder,
            lm: None,
            codec: None,
        })
    }

    /// The engine folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// Fails unless the manifest lists `role` inputs whose hashes are exactly those
/// of the fixture's `files`.
fn check_built_from(manifest: &Manifest, dir: &Path, role: &str, files: &[PathBuf]) -> Result<(), CaseError> {
    let recorded: Vec<&str> = manifest
        .inputs
        .iter()
        .filter(|i| i.role == role)
        .map(|i| i.sha256.as_str())
        .collect();
    let mut expected = Vec::new();
    for f in files {
        expected.push(manifest::sha256_file(f)?);
    }
    if recorded.len() != expected.len() || expected.iter().any(|h| !recorded.contains(&h.as_str())) {
        return Err(CaseError::NotFromFixture {
            dir: dir.to_path_buf(),
            role: role.to_string(),
        });
    }
    Ok(())
}

fn no_engines() -> CaseOutcome {
    CaseOutcome::skip("needs --engines DIR (heart-build --mula FIXTURE/heartmula --codec FIXTURE/heartcodec --out DIR)")
}

fn lm(ctx: &mut ConformContext) -> Result<Option<(&mut HeartMula, Precision)>, CaseError> {
    let weights: Vec<PathBuf> = ctx.mula()?.checkpoint.files().map(Path::to_path_buf).collect();
    let Some(set) = ctx.engines.as_mut() else {
        return Ok(None);
    };
    if set.lm.is_none() {
        check_built_from(&set.manifest, &set.dir, "mula_weights", &weights)?;
        let opened = set.folder.lm(&SessionConfig::default())?;
        set.lm = Some(opened);
    }
    let precision = set.manifest.precision;
    Ok(set.lm.as_mut().map(|lm| (lm, precision)))
}

/// Runs `mula_teacher_forced` / `mula_generate` (fp16 engines use the documented
/// [`mula::MulaTolerances::FP16`]).
pub fn run_mula(ctx: &mut ConformContext, case: &Case) -> CaseResult {
    let tensors = ctx.fixture.load(case)?;
    let fixture_tol = mula::MulaTolerances::from_fixture(&ctx.fixture)?;
    let Some((lm, precision)) = lm(ctx)? else {
        return Ok(no_engines());
    };
    let tol = match precision {
        Precision::Fp32 => fixture_tol,
        Precision::Fp16 => mula::MulaTolerances::FP16,
        other => {
            return Ok(CaseOutcome::skip(format!(
                "no conformance tolerance defined for {other} engines"
            )));
        }
    };
    if case.kind == "mula_teacher_forced" {
        mula::check_teacher_forced(lm, case, &tensors, tol)
    } else {
        mula::check_generate(lm, case, &tensors, tol)
    }
}

/// Runs the `codec_*` kinds.
pub fn run_codec(ctx: &mut ConformContext, case: &Case) -> CaseResult {
    let weights: Vec<PathBuf> = ctx.codec()?.checkpoint.files().map(Path::to_path_buf).collect();
    let ConformContext { fixture, engines, .. } = ctx;
    let Some(set) = engines.as_mut() else {
        return Ok(no_engines());
    };
    if set.codec.is_none() {
        check_built_from(&set.manifest, &set.dir, "codec_weights", &weights)?;
        if set.manifest.codec_precision != Some(Precision::Fp32) {
            return Ok(CaseOutcome::skip(
                "codec conformance tolerances are defined for fp32 codec engines only",
            ));
        }
        set.codec = Some(set.folder.codec()?);
    }
    let codec_engine = set.codec.as_mut().expect("opened above");
    codec::run(codec_engine, fixture, case)
}
