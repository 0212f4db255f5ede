//! Conformance harness: runs the cases of a golden-fixture folder (any set) and
//! reports one line per case plus a summary.
//!
//! Output, one line per case, then the totals:
//! ```text
//! PASS prompt_basic_cfg1 prompt max_abs_err=0 tol=exact
//! SKIP codec_rvq codec_rvq max_abs_err=- tol=- not implemented
//! 9 passed, 0 failed, 14 skipped
//! ```
//!
//! Adding a kind: write `fn run(ctx: &mut ConformContext, case: &Case) -> CaseResult`
//! in a module of this folder (compare with a [`Checker`]; any error becomes a
//! FAIL carrying its message), and map the kind to it in [`CaseKind::runner`].
//! Resources several cases share (checkpoints, later engines and sessions) are
//! built lazily by [`ConformContext`] and kept for the following cases.

pub mod codec;
pub mod engines;
pub mod mula;
pub mod text;

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use heart::fixture::{Case, CaseTensors, Comparison, Fixture, Tolerance, allclose, compare_exact, unravel};
use heart::layout::{CodecCheckpoint, MulaCheckpoint};

/// What a case runner returns; an error turns the case into a FAIL with its
/// message and causes.
pub type CaseResult = Result<CaseOutcome, CaseError>;

/// Why a case (or opening the engine folder) could not run to a verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// A case file, tensor, tolerance or `info` field of the fixture.
    #[error(transparent)]
    Fixture(#[from] heart::Error),
    /// An `info` field that is not the JSON the case kind expects.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A case tensor whose length does not fit its recorded shape.
    #[error(transparent)]
    Shape(#[from] ndarray::ShapeError),
    /// The case data contradicts its kind (a shape, a kind name); the
    /// message names the case and what was expected.
    #[error("{0}")]
    Case(String),
    /// ONNX Runtime could not be located or loaded.
    #[error(transparent)]
    OrtSetup(#[from] heart_backend::library::OrtSetupError),
    /// The engine folder's recorded build inputs are not the fixture's
    /// checkpoint files.
    #[error(
        "engine folder {} was not built from this fixture's checkpoint ({role} hashes differ); build it with \
         heart-build from the fixture's heartmula/ and heartcodec/ folders",
        dir.display()
    )]
    NotFromFixture {
        /// The engine folder.
        dir: std::path::PathBuf,
        /// The manifest input role whose hashes differ (`mula_weights`, `codec_weights`).
        role: String,
    },
    /// The engine folder could not be opened.
    #[error(transparent)]
    Engine(#[from] heart_runtime::engine::EngineError),
    /// The LM failed on the case's inputs.
    #[error(transparent)]
    Lm(#[from] heart_runtime::lm::LmError),
    /// The codec failed on the case's inputs.
    #[error(transparent)]
    Codec(#[from] heart_runtime::codec::CodecError),
}

/// A runner for one case kind.
pub type CaseRunner = fn(&mut ConformContext, &Case) -> CaseResult;

/// The case kinds of the fixture format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKind {
    /// `tokenizer`: encode probes.
    Tokenizer,
    /// `prompt`: prompt tensors from tags + lyrics.
    Prompt,
    /// `mula_teacher_forced`: HeartMuLa logits and hidden states on forced codes.
    MulaTeacherForced,
    /// `mula_generate`: the generation loop (greedy / recorded sampler noise).
    MulaGenerate,
    /// `codec_rvq`: codes → conditioning features.
    CodecRvq,
    /// `codec_estimator`: the flow-matching estimator on one input.
    CodecEstimator,
    /// `codec_scalar_decode`: latents → audio.
    CodecScalarDecode,
    /// `codec_detokenize`: codes → waveform end to end.
    CodecDetokenize,
    /// A kind this harness does not know (newer fixture format).
    Unknown,
}

impl CaseKind {
    /// Parses the `kind` field of `cases.json`.
    pub fn parse(kind: &str) -> Self {
        match kind {
            "tokenizer" => Self::Tokenizer,
            "prompt" => Self::Prompt,
            "mula_teacher_forced" => Self::MulaTeacherForced,
            "mula_generate" => Self::MulaGenerate,
            "codec_rvq" => Self::CodecRvq,
            "codec_estimator" => Self::CodecEstimator,
            "codec_scalar_decode" => Self::CodecScalarDecode,
            "codec_detokenize" => Self::CodecDetokenize,
            _ => Self::Unknown,
        }
    }

    /// The runner of this kind, or why there is none.
    pub fn runner(self) -> Result<CaseRunner, &'static str> {
        match self {
            Self::Tokenizer => Ok(text::run_tokenizer),
            Self::Prompt => Ok(text::run_prompt),
            Self::MulaTeacherForced | Self::MulaGenerate => Ok(engines::run_mula),
            Self::CodecRvq | Self::CodecEstimator | Self::CodecScalarDecode | Self::CodecDetokenize => {
                Ok(engines::run_codec)
            }
            Self::Unknown => Err("unknown case kind"),
        }
    }
}

/// The fixture plus resources built on first use.
#[derive(Debug)]
pub struct ConformContext {
    /// The fixture folder.
    pub fixture: Fixture,
    mula: Option<MulaCheckpoint>,
    codec: Option<CodecCheckpoint>,
    engines: Option<engines::EngineSet>,
}

impl ConformContext {
    /// Opens a fixture folder and checks its files against the listed hashes.
    pub fn open(dir: &Path) -> heart::Result<Self> {
        let fixture = Fixture::open(dir)?;
        fixture.verify_files()?;
        Ok(Self {
            fixture,
            mula: None,
            codec: None,
            engines: None,
        })
    }

    /// Runs the model kinds on the engine folder `dir` (built by heart-build
    /// from this fixture's checkpoints); without one they are skipped.
    pub fn with_engines(self, dir: &Path) -> Result<Self, CaseError> {
        self.with_engines_on(dir, heart_backend::BackendChoice::Cpu)
    }

    /// [`Self::with_engines`] with the sessions on `backend` (resolved
    /// against the folder and this machine as `heart-run --backend` does),
    /// to check a GPU backend against the fixture's tolerances.
    pub fn with_engines_on(mut self, dir: &Path, backend: heart_backend::BackendChoice) -> Result<Self, CaseError> {
        self.engines = Some(engines::EngineSet::open(dir, backend)?);
        Ok(self)
    }

    /// The fixture's HeartMuLa checkpoint, discovered and validated like a user's.
    pub fn mula(&mut self) -> heart::Result<&MulaCheckpoint> {
        let mula = match self.mula.take() {
            Some(m) => m,
            None => MulaCheckpoint::discover_and_open(&self.fixture.mula_dir(), None, None)?,
        };
        Ok(self.mula.insert(mula))
    }

    /// The fixture's HeartCodec checkpoint, discovered and validated like a user's.
    pub fn codec(&mut self) -> heart::Result<&CodecCheckpoint> {
        let codec = match self.codec.take() {
            Some(c) => c,
            None => CodecCheckpoint::discover_and_open(&self.fixture.codec_dir())?,
        };
        Ok(self.codec.insert(codec))
    }
}

/// PASS / FAIL / SKIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every comparison within tolerance.
    Pass,
    /// A comparison failed or the case could not run.
    Fail,
    /// Not run (kind not implemented or unknown).
    Skip,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        })
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Largest absolute error over everything compared (`None` if nothing was).
    pub max_abs_err: Option<f64>,
    /// Tolerance the comparisons used (the loosest one, if several).
    pub tol: Option<Tolerance>,
    /// Why it failed or was skipped; empty on a pass.
    pub detail: String,
}

impl CaseOutcome {
    /// A skipped case.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Skip,
            max_abs_err: None,
            tol: None,
            detail: reason.into(),
        }
    }

    /// A case that could not be run to the end.
    pub fn fail(detail: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Fail,
            max_abs_err: None,
            tol: None,
            detail: detail.into(),
        }
    }
}

/// Accumulates comparisons of one case into a [`CaseOutcome`].
#[derive(Debug, Clone)]
pub struct Checker {
    tol: Tolerance,
    max_abs_err: f64,
    compared: usize,
    failures: Vec<String>,
}

impl Checker {
    /// A checker whose float comparisons default to `tol`.
    pub fn new(tol: Tolerance) -> Self {
        Self {
            tol,
            max_abs_err: 0.0,
            compared: 0,
            failures: Vec::new(),
        }
    }

    /// Exact comparison of integer data with shapes.
    pub fn ints(&mut self, what: &str, actual: (&[i64], &[usize]), expected: (&[i64], &[usize])) {
        if self.shapes_agree(what, actual.1, expected.1) {
            let c = compare_exact(actual.0, expected.0);
            self.record(what, &c, expected.1, |i| {
                format!("got {}, expected {}", actual.0[i], expected.0[i])
            });
        }
    }

    /// Float comparison with shapes; `tol` overrides the checker's default.
    pub fn floats(
        &mut self,
        what: &str,
        actual: (&[f32], &[usize]),
        expected: (&[f32], &[usize]),
        tol: Option<Tolerance>,
    ) {
        let tol = tol.unwrap_or(self.tol);
        if tol.atol > self.tol.atol || tol.rtol > self.tol.rtol {
            self.tol = tol;
        }
        if self.shapes_agree(what, actual.1, expected.1) {
            let c = allclose(actual.0, expected.0, tol.atol, tol.rtol);
            self.record(what, &c, expected.1, |i| {
                format!("got {}, expected {}", actual.0[i], expected.0[i])
            });
        }
    }

    /// Exact comparison against an int64 tensor of the case file.
    pub fn tensor_i64(&mut self, t: &CaseTensors, name: &str, actual: &[i64], shape: &[usize]) -> heart::Result<()> {
        let (expected, expected_shape) = t.i64(name)?;
        self.ints(name, (actual, shape), (&expected, &expected_shape));
        Ok(())
    }

    /// Comparison against a float32 tensor of the case file with the default tolerance.
    pub fn tensor_f32(&mut self, t: &CaseTensors, name: &str, actual: &[f32], shape: &[usize]) -> heart::Result<()> {
        let (expected, expected_shape) = t.f32(name)?;
        self.floats(name, (actual, shape), (&expected, &expected_shape), None);
        Ok(())
    }

    /// Equality of a scalar or string fact (e.g. a processed prompt string).
    pub fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, actual: &T, expected: &T) {
        self.compared += 1;
        if actual != expected {
            self.failures
                .push(format!("{what}: got {actual:?}, expected {expected:?}"));
        }
    }

    fn shapes_agree(&mut self, what: &str, actual: &[usize], expected: &[usize]) -> bool {
        self.compared += 1;
        if actual == expected {
            return true;
        }
        self.max_abs_err = f64::INFINITY;
        self.failures
            .push(format!("{what}: shape {actual:?}, expected {expected:?}"));
        false
    }

    fn record(&mut self, what: &str, c: &Comparison, shape: &[usize], values: impl Fn(usize) -> String) {
        self.max_abs_err = self.max_abs_err.max(c.max_abs_err);
        if c.ok {
            return;
        }
        let mut msg = format!(
            "{what}: {} of {} elements off",
            c.n_bad,
            shape.iter().product::<usize>()
        );
        if let Some(i) = c.worst_index {
            let _ = write!(msg, ", worst at {:?}: {}", unravel(i, shape), values(i));
        }
        self.failures.push(msg);
    }

    /// The outcome: PASS if something was compared and nothing failed.
    pub fn finish(self) -> CaseOutcome {
        const SHOWN: usize = 3;
        let verdict = if self.failures.is_empty() && self.compared > 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let mut detail = self.failures.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ");
        if self.failures.len() > SHOWN {
            let _ = write!(detail, "; +{} more", self.failures.len() - SHOWN);
        }
        if self.compared == 0 {
            detail = "nothing was compared".into();
        }
        CaseOutcome {
            verdict,
            max_abs_err: Some(self.max_abs_err),
            tol: Some(self.tol),
            detail,
        }
    }
}

/// Runs one case through its kind's runner.
pub fn run_case(ctx: &mut ConformContext, case: &Case) -> CaseOutcome {
    match CaseKind::parse(&case.kind).runner() {
        Ok(runner) => runner(ctx, case).unwrap_or_else(|e| CaseOutcome::fail(error_chain(&e))),
        Err(reason) => CaseOutcome::skip(reason),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    msg
}

/// One reported case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// Case kind as written in `cases.json`.
    pub kind: String,
    /// What happened.
    pub outcome: CaseOutcome,
}

impl std::fmt::Display for CaseReport {
    /// `VERDICT name kind max_abs_err=E tol=T [detail]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.outcome;
        let err = match o.max_abs_err {
            None => "-".to_string(),
            // Integer comparisons (ids, codes) give integral errors: print them plainly.
            Some(e) if e.fract() == 0.0 && e.abs() < 1e6 => format!("{e}"),
            Some(e) => format!("{e:.3e}"),
        };
        let tol = o.tol.map_or_else(|| "-".to_string(), |t| t.to_string());
        write!(
            f,
            "{} {} {} max_abs_err={err} tol={tol}",
            o.verdict, self.name, self.kind
        )?;
        if !o.detail.is_empty() {
            write!(f, " {}", o.detail)?;
        }
        Ok(())
    }
}

/// All reported cases of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// In fixture order.
    pub cases: Vec<CaseReport>,
}

impl Report {
    fn count(&self, verdict: Verdict) -> usize {
        self.cases.iter().filter(|c| c.outcome.verdict == verdict).count()
    }

    /// Whether no case failed.
    pub fn success(&self) -> bool {
        self.count(Verdict::Fail) == 0
    }

    /// A case's report by name.
    pub fn case(&self, name: &str) -> Option<&CaseReport> {
        self.cases.iter().find(|c| c.name == name)
    }

    /// `N passed, M failed, K skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip)
        )
    }
}

/// Errors that stop a whole run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConformError {
    /// `--case` named a case the fixture does not have.
    #[error("no case named `{name}` in {fixture}; cases: {available}")]
    UnknownCase {
        /// The requested name.
        name: String,
        /// The fixture folder.
        fixture: String,
        /// Comma-separated case names.
        available: String,
    },
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs every case (or only `only`), writing one line per case and the summary
/// line to `out` as it goes.
pub fn run(ctx: &mut ConformContext, only: Option<&str>, out: &mut dyn Write) -> Result<Report, ConformError> {
    let cases: Vec<Case> = match only {
        None => ctx.fixture.cases().to_vec(),
        Some(name) => {
            let case = ctx.fixture.case(name).ok_or_else(|| ConformError::UnknownCase {
                name: name.to_string(),
                fixture: ctx.fixture.root().display().to_string(),
                available: ctx
                    .fixture
                    .cases()
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            vec![case.clone()]
        }
    };
    let mut report = Report::default();
    for case in &cases {
        let entry = CaseReport {
            name: case.name.clone(),
            kind: case.kind.clone(),
            outcome: run_case(ctx, case),
        };
        writeln!(out, "{entry}")?;
        report.cases.push(entry);
    }
    writeln!(out, "{}", report.summary())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_with_nothing_compared_fails() {
        let outcome = Checker::new(Tolerance::EXACT).finish();
        assert_eq!(outcome.verdict, Verdict::Fail);
        assert_eq!(outcome.detail, "nothing was compared");
    }

    #[test]
    fn checker_floats_use_tolerance_and_report_shape_mismatch() {
        let tol = Tolerance { atol: 1e-3, rtol: 0.0 };
        let mut check = Checker::new(tol);
        check.floats("a", (&[1.0, 2.0005], &[2]), (&[1.0, 2.0], &[2]), None);
        let pass = check.clone().finish();
        assert_eq!(pass.verdict, Verdict::Pass);
        assert!((pass.max_abs_err.unwrap() - 5e-4).abs() < 1e-6);
        check.floats("b", (&[0.0; 6], &[2, 3]), (&[0.0; 6], &[3, 2]), None);
        check.floats("c", (&[0.0, 1.0], &[1, 2]), (&[0.0, 0.0], &[1, 2]), None);
        let fail = check.finish();
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(
            fail.detail,
            "b: shape [2, 3], expected [3, 2]; c: 1 of 2 elements off, worst at [0, 1]: got 1, expected 0"
        );
        assert_eq!(fail.max_abs_err, Some(f64::INFINITY));
    }

    #[test]
    fn report_line_format() {
        let line = CaseReport {
            name: "x".into(),
            kind: "mula_generate".into(),
            outcome: CaseOutcome {
                verdict: Verdict::Pass,
                max_abs_err: Some(1.25e-5),
                tol: Some(Tolerance { atol: 1e-4, rtol: 1e-4 }),
                detail: String::new(),
            },
        };
        assert_eq!(
            line.to_string(),
            "PASS x mula_generate max_abs_err=1.250e-5 tol=atol=1e-4,rtol=1e-4"
        );
        assert!(CaseKind::parse("codec_rvq").runner().is_ok());
        assert_eq!(CaseKind::parse("new_kind").runner().err(), Some("unknown case kind"));
    }
}
