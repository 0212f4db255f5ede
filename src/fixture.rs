//! Reader for golden-fixture folders (any set; nothing here knows tiny-a's sizes).
//!
//! A fixture folder holds `heartmula/` and `heartcodec/` checkpoints laid out like
//! real ones, and `cases/cases.json`: an index of cases, each with a `kind`, free
//! `info` parameters and the tensors of its `cases/<case>.safetensors` file
//! (float32 or int64). [`Fixture::load`] reads a case's file and checks it against
//! the declared dtypes and shapes; [`allclose`] / [`compare_exact`] compare
//! results with the `|a - e| <= atol + rtol * |e|` rule of the fixtures.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Location of the case index inside a fixture folder.
pub const CASES_FILE: &str = "cases/cases.json";

/// A tensor as declared in `cases.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TensorDecl {
    /// `float32` or `int64`.
    pub dtype: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// What it holds.
    #[serde(default)]
    pub description: String,
}

/// One case of `cases.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// Unique name.
    pub name: String,
    /// Kind, e.g. `prompt`, `mula_generate`, `codec_rvq`.
    pub kind: String,
    /// Tensor file relative to the fixture root (`None` for info-only cases).
    pub file: Option<String>,
    /// Parameters and facts of the case.
    #[serde(default)]
    pub info: serde_json::Value,
    /// Declared tensors of `file`.
    #[serde(default)]
    pub tensors: BTreeMap<String, TensorDecl>,
    /// `cases.json` itself, for error messages.
    #[serde(skip)]
    index: PathBuf,
}

impl Case {
    /// `info[key]`, or an error naming the case and key.
    pub fn info(&self, key: &str) -> Result<&serde_json::Value> {
        self.info
            .get(key)
            .ok_or_else(|| self.error(format!("info has no `{key}`")))
    }

    /// `info[key]` as a string.
    pub fn info_str(&self, key: &str) -> Result<&str> {
        self.info(key)?
            .as_str()
            .ok_or_else(|| self.error(format!("info `{key}` is not a string")))
    }

    /// `info[key]` as a number.
    pub fn info_f64(&self, key: &str) -> Result<f64> {
        self.info(key)?
            .as_f64()
            .ok_or_else(|| self.error(format!("info `{key}` is not a number")))
    }

    /// `info[key]` as a non-negative integer.
    pub fn info_usize(&self, key: &str) -> Result<usize> {
        self.info(key)?
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.error(format!("info `{key}` is not a non-negative integer")))
    }

    /// An [`Error::Fixture`] about this case.
    pub fn error(&self, message: String) -> Error {
        Error::Fixture {
            path: self.index.clone(),
            message: format!("case `{}`: {message}", self.name),
        }
    }
}

/// `cases.json`: what a fixture set contains.
#[derive(Debug, Clone, Deserialize)]
struct Index {
    format_version: u32,
    fixture_set: String,
    #[serde(default)]
    recommended_tolerances: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    cases: Vec<Case>,
}

/// An opened fixture folder.
#[derive(Debug, Clone)]
pub struct Fixture {
    root: PathBuf,
    index_path: PathBuf,
    index: Index,
}

impl Fixture {
    /// Reads `dir/cases/cases.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join(CASES_FILE);
        let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io {
            path: index_path.clone(),
            source,
        })?;
        let mut index: Index = serde_json::from_str(&text).map_err(|e| Error::Fixture {
            path: index_path.clone(),
            message: format!("not a fixture index: {e}"),
        })?;
        for case in &mut index.cases {
            case.index = index_path.clone();
        }
        Ok(Self {
            root: dir.to_path_buf(),
            index_path,
            index,
        })
    }

    /// The fixture folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Name of the set (`fixture_set`).
    pub fn set_name(&self) -> &str {
        &self.index.fixture_set
    }

    /// `format_version` of `cases.json`.
    pub fn format_version(&self) -> u32 {
        self.index.format_version
    }

    /// The HeartMuLa checkpoint folder (`heartmula/`).
    pub fn mula_dir(&self) -> PathBuf {
        self.root.join("heartmula")
    }

    /// The HeartCodec checkpoint folder (`heartcodec/`).
    pub fn codec_dir(&self) -> PathBuf {
        self.root.join("heartcodec")
    }

    /// All cases, in file order.
    pub fn cases(&self) -> &[Case] {
        &self.index.cases
    }

    /// A case by name.
    pub fn case(&self, name: &str) -> Option<&Case> {
        self.index.cases.iter().find(|c| c.name == name)
    }

    /// A recommended tolerance by key, e.g. `mula_logits`; the string `"exact"` is
    /// [`Tolerance::EXACT`], an object gives `atol` (required) and `rtol` (default 0).
    pub fn tolerance(&self, key: &str) -> Result<Tolerance> {
        let fail = |m: &str| Error::Fixture {
            path: self.index_path.clone(),
            message: format!("recommended_tolerances `{key}`: {m}"),
        };
        let value = self
            .index
            .recommended_tolerances
            .get(key)
            .ok_or_else(|| fail("missing"))?;
        if value.as_str() == Some("exact") {
            return Ok(Tolerance::EXACT);
        }
        let atol = value.get("atol").and_then(serde_json::Value::as_f64);
        let rtol = value.get("rtol").map_or(Some(0.0), serde_json::Value::as_f64);
        match (atol, rtol) {
            (Some(atol), Some(rtol)) => Ok(Tolerance { atol, rtol }),
            _ => Err(fail("expected \"exact\" or {\"atol\": number, \"rtol\": number}")),
        }
    }

    /// Checks every file listed under `files` against its SHA-256.
    pub fn verify_files(&self) -> Result<()> {
        for (rel, want) in &self.index.files {
            let path = self.root.join(rel);
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let got = hex(&Sha256::digest(&bytes));
            if &got != want {
                return Err(Error::Fixture {
                    path,
                    message: format!("sha256 {got}, but {CASES_FILE} lists {want}"),
                });
            }
        }
        Ok(())
    }

    /// Reads a case's tensor file and checks it holds every declared tensor with
    /// the declared dtype and shape.
    pub fn load(&self, case: &Case) -> Result<CaseTensors> {
        let rel = case
            .file
            .as_deref()
            .ok_or_else(|| case.error("has no tensor file".into()))?;
        let tensors = CaseTensors::read(&self.root.join(rel))?;
        for (name, decl) in &case.tensors {
            let info = tensors.info(name)?;
            let dtype_ok = matches!(
                (decl.dtype.as_str(), info.dtype),
                ("float32", Dtype::F32) | ("int64", Dtype::I64)
            );
            if !dtype_ok || info.shape != decl.shape {
                return Err(tensors.error(
                    name,
                    format!(
                        "stored as {:?} {:?}, but cases.json declares {} {:?}",
                        info.dtype, info.shape, decl.dtype, decl.shape
                    ),
                ));
            }
        }
        Ok(tensors)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tensors of one case file, read into memory (case files are small).
#[derive(Debug)]
pub struct CaseTensors {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    infos: HashMap<String, TensorInfo>,
}

impl CaseTensors {
    fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let infos = metadata.tensors().into_iter().map(|(n, i)| (n, i.clone())).collect();
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            data_start: 8 + header_len,
            infos,
        })
    }

    /// The case file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stored tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.infos.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether the file holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.infos.contains_key(name)
    }

    /// A float32 tensor and its shape.
    pub fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (bytes, shape) = self.raw(name, Dtype::F32)?;
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((values, shape))
    }

    /// An int64 tensor and its shape.
    pub fn i64(&self, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let (bytes, shape) = self.raw(name, Dtype::I64)?;
        let values = bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok((values, shape))
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.infos
            .get(name)
            .ok_or_else(|| self.error(name, "missing from the case file".into()))
    }

    fn raw(&self, name: &str, dtype: Dtype) -> Result<(&[u8], Vec<usize>)> {
        let info = self.info(name)?;
        if info.dtype != dtype {
            return Err(self.error(name, format!("dtype {:?}, expected {dtype:?}", info.dtype)));
        }
        let (a, b) = info.data_offsets;
        Ok((
            &self.bytes[self.data_start + a..self.data_start + b],
            info.shape.clone(),
        ))
    }

    fn error(&self, name: &str, message: String) -> Error {
        Error::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            message,
        }
    }
}

/// An absolute + relative tolerance: `|a - e| <= atol + rtol * |e|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f64,
    /// Relative part (times `|expected|`).
    pub rtol: f64,
}

impl Tolerance {
    /// Exact equality.
    pub const EXACT: Self = Self { atol: 0.0, rtol: 0.0 };

    /// Compares with this tolerance (see [`allclose`]).
    pub fn check(&self, actual: &[f32], expected: &[f32]) -> Comparison {
        allclose(actual, expected, self.atol, self.rtol)
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Self::EXACT {
            f.write_str("exact")
        } else {
            write!(f, "atol={:e},rtol={:e}", self.atol, self.rtol)
        }
    }
}

/// Result of an element-wise comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Largest `|actual - expected|` (infinite if a value is NaN or the lengths differ).
    pub max_abs_err: f64,
    /// Flat index of the element with the largest error (`None` when empty).
    pub worst_index: Option<usize>,
    /// Elements outside the tolerance.
    pub n_bad: usize,
    /// Whether every element is within tolerance and the lengths agree.
    pub ok: bool,
}

/// Element-wise `|a - e| <= atol + rtol * |e|` in f64. Lengths that differ fail
/// with an infinite error (check shapes first for a clearer message).
pub fn allclose(actual: &[f32], expected: &[f32], atol: f64, rtol: f64) -> Comparison {
    compare(actual, expected, |a, e| {
        let (a, e) = (f64::from(a), f64::from(e));
        let err = if a.is_nan() || e.is_nan() {
            f64::INFINITY
        } else {
            (a - e).abs()
        };
        (err, err <= atol + rtol * e.abs())
    })
}

/// Exact comparison of integer tensors (ids, codes, masks).
pub fn compare_exact(actual: &[i64], expected: &[i64]) -> Comparison {
    compare(actual, expected, |a, e| ((a as f64 - e as f64).abs(), a == e))
}

fn compare<T: Copy>(actual: &[T], expected: &[T], elem: impl Fn(T, T) -> (f64, bool)) -> Comparison {
    let mut out = Comparison {
        max_abs_err: 0.0,
        worst_index: None,
        n_bad: actual.len().abs_diff(expected.len()),
        ok: actual.len() == expected.len(),
    };
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (err, within) = elem(a, e);
        if out.worst_index.is_none() || err > out.max_abs_err {
            out.max_abs_err = err;
            out.worst_index = Some(i);
        }
        if !within {
            out.n_bad += 1;
            out.ok = false;
        }
    }
    if actual.len() != expected.len() {
        out.max_abs_err = f64::INFINITY;
    }
    out
}

/// Multi-index of flat `index` in a row-major `shape` (for failure messages).
pub fn unravel(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for (o, &d) in out.iter_mut().zip(shape).rev() {
        if d > 0 {
            *o = index % d;
            index /= d;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allclose_uses_atol_plus_rtol_times_expected() {
        let c = allclose(&[1.0, 10.05, 3.0], &[1.0, 10.0, 3.0], 0.01, 0.005);
        assert!(c.ok, "{c:?}");
        assert_eq!(c.worst_index, Some(1));
        assert!((c.max_abs_err - 0.05).abs() < 1e-5);
        let c = allclose(&[1.0, 10.07], &[1.0, 10.0], 0.01, 0.005);
        assert!(!c.ok);
        assert_eq!(c.n_bad, 1);
    }

    #[test]
    fn nan_and_length_mismatch_fail() {
        let c = allclose(&[f32::NAN], &[0.0], 1.0, 1.0);
        assert!(!c.ok && c.max_abs_err.is_infinite());
        let c = allclose(&[0.0], &[0.0, 0.0], 1.0, 1.0);
        assert!(!c.ok && c.n_bad == 1 && c.max_abs_err.is_infinite());
    }

    #[test]
    fn exact_comparison_reports_worst_element() {
        let c = compare_exact(&[1, 2, 9, 4], &[1, 2, 3, 5]);
        assert!(!c.ok);
        assert_eq!((c.n_bad, c.worst_index, c.max_abs_err), (2, Some(2), 6.0));
        assert!(compare_exact(&[], &[]).ok);
    }

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(0, &[2, 3, 4]), [0, 0, 0]);
        assert_eq!(unravel(23, &[2, 3, 4]), [1, 2, 3]);
        assert_eq!(unravel(5, &[2, 3]), [1, 2]);
    }

    #[test]
    fn tolerance_display() {
        assert_eq!(Tolerance::EXACT.to_string(), "exact");
        assert_eq!(Tolerance { atol: 1e-4, rtol: 0.0 }.to_string(), "atol=1e-4,rtol=0e0");
    }
}
