//! Codes → conditioning features (spec §4.3), computed in Rust from
//! `codec_tables.safetensors`.
//!
//! Why Rust rather than a graph: per 372-code window this is 8 table lookups, a
//! 32→512 and a 512→512 linear (~0.1 GFLOP, well under 1 % of one estimator
//! call), it needs integer handling of out-of-range codes, and conformance wants
//! the intermediates (`vq_out`, `cond`) which a fused graph would hide.
//!
//! Out-of-range codes: the LM's audio vocabulary has specials above the codebook
//! (`8192` is not end-of-audio upstream and would make upstream index past the
//! codebook and crash). Codes `>= codebook_size` are **clamped** to
//! `codebook_size − 1` and counted in [`Conditioning::clamped`]; negative codes are
//! an error.

use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2, Axis};
use safetensors::{Dtype, SafeTensors};

use super::error::{CodecError, Result};

/// File name of the RVQ / conditioning tables inside an engine folder.
pub const TABLES_FILE: &str = heart::engine::CODEC_TABLES;
/// Table name of quantizer `q`'s codebook `[codebook_size, codebook_dim]`.
pub fn codebook_name(q: usize) -> String {
    format!("vq_embed.codebook.{q}")
}
/// `project_out` weight `[dim, codebook_dim]`.
pub const PROJECT_OUT_WEIGHT: &str = "vq_embed.project_out.weight";
/// `project_out` bias `[dim]`.
pub const PROJECT_OUT_BIAS: &str = "vq_embed.project_out.bias";
/// `cond_feature_emb` weight `[dim, dim]`.
pub const COND_WEIGHT: &str = "cond_feature_emb.weight";
/// `cond_feature_emb` bias `[dim]`.
pub const COND_BIAS: &str = "cond_feature_emb.bias";

/// The RVQ codebooks and the two projections after them.
#[derive(Debug, Clone)]
pub struct CodecTables {
    /// `[num_quantizers · codebook_size, codebook_dim]`, quantizer-major.
    codebooks: Array2<f32>,
    num_quantizers: usize,
    codebook_size: usize,
    project_out_t: Array2<f32>,
    project_out_b: Vec<f32>,
    cond_t: Array2<f32>,
    cond_b: Vec<f32>,
}

/// Conditioning of one code window.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// `project_out(Σ_q codebook_q[code])`, `[frames, dim]`.
    pub vq_out: Array2<f32>,
    /// `cond_feature_emb(vq_out)`, `[frames, dim]`.
    pub cond: Array2<f32>,
    /// `cond` with every frame repeated twice (nearest ×2), `[2·frames, dim]`.
    pub mu: Array2<f32>,
    /// How many codes were `>= codebook_size` and clamped.
    pub clamped: usize,
}

impl CodecTables {
    /// Loads the tables of a codec with `num_quantizers` quantizers and checks every
    /// shape against the others.
    pub fn load(path: &Path, num_quantizers: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| CodecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| table_err(path, "(header)", e.to_string()))?;
        let mut codebooks = Vec::new();
        let mut entry_shape: Option<Vec<usize>> = None;
        for q in 0..num_quantizers {
            let name = codebook_name(q);
            let (shape, data) = read(&st, path, &name, 2)?;
            match &entry_shape {
                Some(first) => expect_shape(path, &name, &shape, first)?,
                None => entry_shape = Some(shape),
            }
            codebooks.extend(data);
        }
        let Some(&[k, d]) = entry_shape.as_deref() else {
            return Err(table_err(
                path,
                &codebook_name(0),
                "the codec config has no quantizers".into(),
            ));
        };
        let (po_shape, po) = read(&st, path, PROJECT_OUT_WEIGHT, 2)?;
        let dim = po_shape[0];
        expect_shape(path, PROJECT_OUT_WEIGHT, &po_shape, &[dim, d])?;
        let (pb_shape, pb) = read(&st, path, PROJECT_OUT_BIAS, 1)?;
        expect_shape(path, PROJECT_OUT_BIAS, &pb_shape, &[dim])?;
        let (cw_shape, cw) = read(&st, path, COND_WEIGHT, 2)?;
        expect_shape(path, COND_WEIGHT, &cw_shape, &[dim, dim])?;
        let (cbias_shape, cbias) = read(&st, path, COND_BIAS, 1)?;
        expect_shape(path, COND_BIAS, &cbias_shape, &[dim])?;
        let matrix = |v: Vec<f32>, r: usize, c: usize| Array2::from_shape_vec((r, c), v).expect("length checked");
        Ok(Self {
            codebooks: matrix(codebooks, num_quantizers * k, d),
            num_quantizers,
            codebook_size: k,
            project_out_t: matrix(po, dim, d).reversed_axes(),
            project_out_b: pb,
            cond_t: matrix(cw, dim, dim).reversed_axes(),
            cond_b: cbias,
        })
    }

    /// Number of quantizers (rows of a code matrix).
    pub fn num_quantizers(&self) -> usize {
        self.num_quantizers
    }

    /// Codes per quantizer.
    pub fn codebook_size(&self) -> usize {
        self.codebook_size
    }

    /// Conditioning width (`dim`).
    pub fn dim(&self) -> usize {
        self.cond_b.len()
    }

    /// Conditioning for `codes` `[num_quantizers, frames]` (any strides).
    pub fn condition(&self, codes: ArrayView2<'_, i64>) -> Result<Conditioning> {
        let (q, frames) = codes.dim();
        if q != self.num_quantizers {
            return Err(CodecError::Codes(format!(
                "code matrix has {q} rows, the codec has {} quantizers",
                self.num_quantizers
            )));
        }
        let mut z = Array2::<f32>::zeros((frames, self.codebooks.ncols()));
        let mut clamped = 0;
        for (qi, row) in codes.axis_iter(Axis(0)).enumerate() {
            for (t, &code) in row.iter().enumerate() {
                let idx = self.index(code, qi, t, &mut clamped)?;
                let entry = self.codebooks.row(qi * self.codebook_size + idx);
                z.row_mut(t).zip_mut_with(&entry, |a, &b| *a += b);
            }
        }
        let mut vq_out = z.dot(&self.project_out_t);
        add_bias(&mut vq_out, &self.project_out_b);
        let mut cond = vq_out.dot(&self.cond_t);
        add_bias(&mut cond, &self.cond_b);
        let mu = upsample_nearest_2x(&cond);
        Ok(Conditioning {
            vq_out,
            cond,
            mu,
            clamped,
        })
    }

    fn index(&self, code: i64, q: usize, t: usize, clamped: &mut usize) -> Result<usize> {
        let Ok(c) = usize::try_from(code) else {
            return Err(CodecError::Codes(format!(
                "negative code {code} at quantizer {q}, frame {t}"
            )));
        };
        if c >= self.codebook_size {
            *clamped += 1;
            return Ok(self.codebook_size - 1);
        }
        Ok(c)
    }
}

fn add_bias(m: &mut Array2<f32>, bias: &[f32]) {
    for mut row in m.rows_mut() {
        row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
    }
}

/// Nearest ×2 upsampling in time: frame `t` becomes frames `2t` and `2t + 1`.
fn upsample_nearest_2x(x: &Array2<f32>) -> Array2<f32> {
    let (t, d) = x.dim();
    let mut out = Array2::<f32>::zeros((2 * t, d));
    for (i, row) in x.rows().into_iter().enumerate() {
        out.row_mut(2 * i).assign(&row);
        out.row_mut(2 * i + 1).assign(&row);
    }
    out
}

fn table_err(path: &Path, name: &str, message: String) -> CodecError {
    CodecError::Table {
        path: PathBuf::from(path),
        name: name.to_string(),
        message,
    }
}

fn read(st: &SafeTensors<'_>, path: &Path, name: &str, rank: usize) -> Result<(Vec<usize>, Vec<f32>)> {
    let view = st.tensor(name).map_err(|_| table_err(path, name, "missing".into()))?;
    if view.dtype() != Dtype::F32 || view.shape().len() != rank {
        return Err(table_err(
            path,
            name,
            format!(
                "expected a rank-{rank} F32 tensor, found {:?} {:?}",
                view.dtype(),
                view.shape()
            ),
        ));
    }
    let data = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((view.shape().to_vec(), data))
}

fn expect_shape(path: &Path, name: &str, got: &[usize], expected: &[usize]) -> Result<()> {
    if got != expected {
        return Err(table_err(path, name, format!("shape {got:?}, expected {expected:?}")));
    }
    Ok(())
}
