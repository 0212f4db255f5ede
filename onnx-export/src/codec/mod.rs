//! HeartCodec export: the decode path of a HeartCodec checkpoint as engine files.
//!
//! [`export_codec`] writes into an engine folder:
//! - [`FLOW_ESTIMATOR_FILE`] (+ `.data`): the flow-matching estimator ([`estimator`]);
//! - [`SCALAR_DECODER_FILE`] (+ `.data`): the ScalarModel decoder ([`scalar_decoder`]);
//! - [`TABLES_FILE`]: RVQ codebooks and the two projections after them, used by the
//!   runtime in Rust (a lookup plus two small linears per window, which also lets
//!   the runtime handle out-of-range codes and report intermediates);
//! - [`CODEC_CONFIG_FILE`]: the checkpoint's `config.json` fields, re-serialised.
//!
//! Precision: `Fp32` (default; upstream warns that reduced codec precision degrades
//! audio) or `Fp16`, which stores matrices and conv kernels as f16 and casts them
//! back to f32 in the graph (half the size on disk, f32 compute; biases, norms and
//! tables stay f32), or `Int8`: the estimator's per-token linears as dynamic
//! int8 products for CPUs ([`int8`]), everything else as at fp32. `Fp8`, `Fp4`
//! and `Int4` are refused.

pub mod estimator;
pub mod int8;
pub mod ops;
pub mod scalar_decoder;
pub mod weight;

use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::CodecConfig;
use heart::precision::Precision;

use crate::error::{ExportError, Result};
use crate::external::WrittenFile;
use crate::graph::DType;
use crate::tables::{Table, write_f32_tables};
use ops::Params;

/// Flow estimator graph file.
pub const FLOW_ESTIMATOR_FILE: &str = heart::engine::FLOW_ESTIMATOR_GRAPH;
/// Scalar decoder graph file.
pub const SCALAR_DECODER_FILE: &str = heart::engine::SCALAR_DECODER_GRAPH;
/// RVQ / conditioning tables (safetensors).
pub const TABLES_FILE: &str = heart::engine::CODEC_TABLES;
/// The codec config (JSON, upstream field names).
pub const CODEC_CONFIG_FILE: &str = heart::engine::CODEC_CONFIG;
/// Table name of quantizer `q`'s codebook `[codebook_size, codebook_dim]`.
pub fn table_codebook(q: usize) -> String {
    format!("vq_embed.codebook.{q}")
}
/// Table: `project_out` weight `[dim, codebook_dim]`.
pub const TABLE_PROJECT_OUT_WEIGHT: &str = "vq_embed.project_out.weight";
/// Table: `project_out` bias `[dim]`.
pub const TABLE_PROJECT_OUT_BIAS: &str = "vq_embed.project_out.bias";
/// Table: `cond_feature_emb` weight `[dim, dim]`.
pub const TABLE_COND_WEIGHT: &str = "cond_feature_emb.weight";
/// Table: `cond_feature_emb` bias `[dim]`.
pub const TABLE_COND_BIAS: &str = "cond_feature_emb.bias";

/// Writes the codec engine files for `ckpt` into `out_dir` (which must exist) and
/// returns every file written with its size.
pub fn export_codec(
    ckpt: &Checkpoint,
    cfg: &CodecConfig,
    precision: Precision,
    out_dir: &Path,
) -> Result<Vec<WrittenFile>> {
    let matrix_dtype = match precision {
        Precision::Fp32 | Precision::Int8 => DType::F32,
        Precision::Fp16 => DType::F16,
        other => {
            return Err(ExportError::Unsupported {
                what: format!("HeartCodec at {other}: only fp32, fp16 and int8 are supported"),
            });
        }
    };
    let params = Params::new(ckpt, matrix_dtype);
    let mut files = Vec::new();
    let estimator_params = params.with_int8_linears(precision == Precision::Int8);
    files.extend(estimator::build(
        &estimator_params,
        cfg,
        &out_dir.join(FLOW_ESTIMATOR_FILE),
    )?);
    files.extend(scalar_decoder::build(&params, cfg, &out_dir.join(SCALAR_DECODER_FILE))?);
    files.push(write_tables(&params, cfg, &out_dir.join(TABLES_FILE))?);
    files.push(write_config(cfg, &out_dir.join(CODEC_CONFIG_FILE))?);
    Ok(files)
}

fn write_tables(p: &Params<'_>, cfg: &CodecConfig, path: &Path) -> Result<WrittenFile> {
    let (k, d, dim) = (cfg.codebook_size, cfg.codebook_dim, cfg.dim);
    let names: Vec<String> = (0..cfg.num_quantizers).map(table_codebook).collect();
    let mut tables = Vec::with_capacity(names.len() + 4);
    for (q, name) in names.iter().enumerate() {
        let source = p.tensor(
            &format!("flow_matching.vq_embed.layers.{q}._codebook.embed"),
            &[1, k, d],
        )?;
        tables.push(Table {
            name,
            source,
            shape: vec![k, d],
        });
    }
    for (name, source, shape) in [
        (
            TABLE_PROJECT_OUT_WEIGHT,
            "flow_matching.vq_embed.project_out.weight",
            vec![dim, d],
        ),
        (
            TABLE_PROJECT_OUT_BIAS,
            "flow_matching.vq_embed.project_out.bias",
            vec![dim],
        ),
        (
            TABLE_COND_WEIGHT,
            "flow_matching.cond_feature_emb.weight",
            vec![dim, dim],
        ),
        (TABLE_COND_BIAS, "flow_matching.cond_feature_emb.bias", vec![dim]),
    ] {
        let source = p.tensor(source, &shape)?;
        tables.push(Table { name, source, shape });
    }
    write_f32_tables(path, &tables)
}

fn write_config(cfg: &CodecConfig, path: &Path) -> Result<WrittenFile> {
    let json = serde_json::to_vec_pretty(cfg).map_err(|e| ExportError::Unsupported {
        what: format!("{}: serialising the codec config: {e}", path.display()),
    })?;
    write_file(path, &json)
}

fn write_file(path: &Path, data: &[u8]) -> Result<WrittenFile> {
    std::fs::write(path, data).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(WrittenFile {
        path: path.to_path_buf(),
        bytes: data.len() as u64,
    })
}
