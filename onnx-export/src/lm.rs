//! HeartMuLa as two ONNX graphs plus an embedding-table file (spec §2).
//!
//! - `backbone.onnx`: summed frame embeddings → backbone stack → final norm →
//!   `codebook0_head`, at every position (`hidden_all`, `c0_logits_all`) and at
//!   the last one (`hidden`, `c0_logits`, slices of the former).
//! - `decoder.onnx`: `projection` → decoder stack → final norm at the last
//!   position → `audio_head[codebook - 1]` (`logits`); on a whole-frame call
//!   also every codebook's logits at once (`logits_all`, see [`frame_logits`]).
//!
//! The per-position outputs serve speculative decoding, which scores several
//! drafted frames in one call. They cost the plain path nothing per frame (a
//! one-position step computes the same products; the decoder's `logits_all`
//! sits behind an `If`); a prompt prefill pays `codebook0_head` on every prompt
//! row, under 1% of the prefill's own products at the real sizes.
//! - `lm_tables.safetensors`: text/audio/unconditional embeddings and the MuQ
//!   bias, f32.
//!
//! The per-row embedding sum stays out of the graphs on purpose: per frame it is
//! a gather of 9 rows, it carries the prompt-specific rules (masked columns, the
//! unconditional CFG row, the MuQ slot) that are easier to state and test in
//! Rust, and it keeps the 1.6 GB text table out of the backbone's weights (the
//! runtime maps it and touches only the rows a prompt uses).
//!
//! Graph I/O names and shapes are in [`heart::engine::io`]; the attention/KV
//! cache design is in [`crate::blocks`].

use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::{FlavorParams, MulaConfig};
use heart::engine::{self, io, tables as tn};
use heart::precision::Precision;

use crate::blocks::{self, Numerics, Stack, cast_if, expect_shape};
use crate::error::{ExportError, Result};
use crate::external::WrittenFile;
use crate::graph::{Attr, DType, Dim, GraphBuilder, Layout, Value};
use crate::tables::{Table, write_f32_tables};

/// Numerics of the LM graphs at `precision`.
pub fn numerics(precision: Precision) -> Result<Numerics> {
    match precision {
        Precision::Fp32 => Ok(Numerics {
            weights: DType::F32,
            compute: DType::F32,
        }),
        Precision::Fp16 => Ok(Numerics {
            weights: DType::F16,
            compute: DType::F16,
        }),
        Precision::Fp8 | Precision::Fp4 => Err(ExportError::Unsupported {
            what: format!("HeartMuLa export at {precision} is not implemented yet (fp32 and fp16 are)"),
        }),
    }
}

/// Exports the backbone and decoder graphs and the embedding tables of the
/// HeartMuLa checkpoint `ckpt` into `out_dir` (which must exist). Returns every
/// file written, with sizes.
pub fn export_lm(
    ckpt: &Checkpoint,
    cfg: &MulaConfig,
    precision: Precision,
    out_dir: &Path,
) -> Result<Vec<WrittenFile>> {
    let nm = numerics(precision)?;
    let mut files = export_backbone(ckpt, cfg, nm, &out_dir.join(engine::BACKBONE_GRAPH))?;
    files.extend(export_decoder(ckpt, cfg, nm, &out_dir.join(engine::DECODER_GRAPH))?);
    files.push(export_tables(ckpt, cfg, &out_dir.join(engine::LM_TABLES))?);
    Ok(files)
}

/// Writes `backbone.onnx` (+ data).
pub fn export_backbone(ckpt: &Checkpoint, cfg: &MulaConfig, nm: Numerics, path: &Path) -> Result<Vec<WrittenFile>> {
    let p = &cfg.backbone;
    let mut g = GraphBuilder::create(path, "heartmula_backbone")?;
    g.metadata("heart.graph", "backbone");
    let embeds = g.input(
        io::EMBEDS,
        DType::F32,
        &[Dim::from("batch"), "seq".into(), p.embed_dim.into()],
    );
    let (x, cache) = stack(&mut g, ckpt, "backbone", p, nm, &embeds)?;
    let hidden_all = final_norm(&mut g, ckpt, "backbone", p, &x)?;
    let hidden = last_position(&mut g, "backbone", &hidden_all);
    let v = cfg.audio_vocab_size;
    let head = expect_shape(ckpt, "codebook0_head.weight", &[v, p.embed_dim])?;
    let h = cast_if(&mut g, &hidden_all, DType::F32, nm.compute);
    let logits_all = blocks::linear(&mut g, &h, &head, nm)?;
    let logits_all = cast_if(&mut g, &logits_all, nm.compute, DType::F32);
    let logits = last_position(&mut g, "codebook0_head", &logits_all);
    g.output(
        &hidden,
        io::HIDDEN,
        DType::F32,
        &[Dim::from("batch"), p.embed_dim.into()],
    );
    g.output(&logits, io::C0_LOGITS, DType::F32, &[Dim::from("batch"), v.into()]);
    output_cache(&mut g, p, nm, &cache);
    let per_position = |n: usize| [Dim::from("batch"), "seq".into(), n.into()];
    g.output(&hidden_all, io::HIDDEN_ALL, DType::F32, &per_position(p.embed_dim));
    g.output(&logits_all, io::C0_LOGITS_ALL, DType::F32, &per_position(v));
    g.finish()
}

/// Writes `decoder.onnx` (+ data).
pub fn export_decoder(ckpt: &Checkpoint, cfg: &MulaConfig, nm: Numerics, path: &Path) -> Result<Vec<WrittenFile>> {
    let (pb, p) = (&cfg.backbone, &cfg.decoder);
    let v = cfg.audio_vocab_size;
    let mut g = GraphBuilder::create(path, "heartmula_decoder")?;
    g.metadata("heart.graph", "decoder");
    let embeds = g.input(
        io::EMBEDS,
        DType::F32,
        &[Dim::from("batch"), "seq".into(), pb.embed_dim.into()],
    );
    let codebook = g.input(io::CODEBOOK, DType::I64, &[]);
    let proj = expect_shape(ckpt, "projection.weight", &[p.embed_dim, pb.embed_dim])?;
    let e = cast_if(&mut g, &embeds, DType::F32, nm.compute);
    let x = blocks::linear(&mut g, &e, &proj, nm)?;
    let x = cast_if(&mut g, &x, nm.compute, DType::F32);
    let (x, cache) = stack(&mut g, ckpt, "decoder", p, nm, &x)?;
    let normed = final_norm(&mut g, ckpt, "decoder", p, &x)?;
    let h = last_position(&mut g, "decoder", &normed);
    let heads_t = expect_shape(ckpt, "audio_head", &[cfg.audio_num_codebooks - 1, p.embed_dim, v])?;
    let heads = (0..cfg.audio_num_codebooks - 1)
        .map(|i| g.weight_named(&format!("audio_head.{i}"), &heads_t, nm.weights, Layout::Index(i)))
        .collect::<Result<Vec<_>>>()?;
    let logits = g.with_scope("audio_head", |g| -> Result<Value> {
        let h = cast_if(g, &h, DType::F32, nm.compute);
        let l = select_head(g, &codebook, &h, &heads, 1, nm.compute)?;
        Ok(cast_if(g, &l, nm.compute, DType::F32))
    })?;
    g.output(&logits, io::LOGITS, DType::F32, &[Dim::from("batch"), v.into()]);
    output_cache(&mut g, p, nm, &cache);
    let frame = g.with_scope("audio_head_frame", |g| {
        frame_logits(g, &normed, &logits, &heads, nm.compute)
    })?;
    g.output(
        &frame,
        io::LOGITS_ALL,
        DType::F32,
        &[Dim::from("batch"), "codebooks".into(), v.into()],
    );
    g.finish()
}

/// The decoder's `logits_all`. On a whole-frame call (`S` = `heads + 1` rows:
/// the backbone hidden state, then codes `0..heads` at positions `0..=heads`),
/// position `j`'s final-norm state times `audio_head[j - 1]` for `j = 1..=heads`,
/// `[B, heads, V]`: every codebook's logits given the frame's earlier codes, in
/// one call (speculative scoring). On any other call it is an empty
/// `[B, 0, V]`: the `If` skips the head products, so the per-codebook walk pays
/// nothing for this output. `normed` is the f32 final-norm output `[B, S, D]`,
/// `logits` the call's f32 `[B, V]` output (the empty branch slices it).
fn frame_logits(g: &mut GraphBuilder, normed: &Value, logits: &Value, heads: &[Value], dtype: DType) -> Result<Value> {
    let seq = g.node("Shape", &[normed], vec![Attr::int("start", 1), Attr::int("end", 2)]);
    let whole = g.const_i64(&[heads.len() as i64 + 1]);
    let is_whole = g.node("Equal", &[&seq, &whole], vec![]);
    let is_whole = g.squeeze(&is_whole, &[0]);
    let then = g.subgraph("audio_head_frame_all", |g| {
        let rows: Vec<Value> = heads
            .iter()
            .enumerate()
            .map(|(i, head)| {
                let j = i as i64 + 1;
                let h = g.slice(normed, &[j], &[j + 1], &[1]);
                let h = cast_if(g, &h, DType::F32, dtype);
                g.matmul(&h, head)
            })
            .collect();
        let all = g.concat(&rows.iter().collect::<Vec<_>>(), 1);
        Ok(vec![(cast_if(g, &all, dtype, DType::F32), DType::F32)])
    })?;
    let otherwise = g.subgraph("audio_head_frame_none", |g| {
        let l = g.unsqueeze(logits, &[1]);
        Ok(vec![(g.slice(&l, &[0], &[0], &[1]), DType::F32)])
    })?;
    Ok(g.if_(&is_whole, then, otherwise, 1).remove(0))
}

/// `h @ heads[codebook - first]` as a chain of `If`s on `codebook`. A `Gather`
/// of the stacked `[7, D, V]` head would copy (and MLAS then repack) a 100 MB
/// slice per decoder call at the real size; selecting among 7 initializers
/// lets ORT prepack each head once (measured: 17 ms instead of 38 ms per call
/// at `[2, 3072] × [3072, 8197]` f32). Codebooks past the last head use the last.
fn select_head(
    g: &mut GraphBuilder,
    codebook: &Value,
    h: &Value,
    heads: &[Value],
    first: i64,
    dtype: DType,
) -> Result<Value> {
    let [head, rest @ ..] = heads else {
        return Err(ExportError::Unsupported {
            what: "a decoder without audio heads (audio_num_codebooks < 2)".into(),
        });
    };
    if rest.is_empty() {
        return Ok(g.matmul(h, head));
    }
    let k = g.scalar_i64(first);
    let is_k = g.node("Equal", &[codebook, &k], vec![]);
    let then = g.subgraph(&format!("audio_head_{first}"), |g| Ok(vec![(g.matmul(h, head), dtype)]))?;
    let otherwise = g.subgraph(&format!("audio_head_after_{first}"), |g| {
        Ok(vec![(select_head(g, codebook, h, rest, first + 1, dtype)?, dtype)])
    })?;
    Ok(g.if_(&is_k, then, otherwise, 1).remove(0))
}

/// Writes `lm_tables.safetensors`.
pub fn export_tables(ckpt: &Checkpoint, cfg: &MulaConfig, path: &Path) -> Result<WrittenFile> {
    let d = cfg.backbone.embed_dim;
    let audio_rows = cfg.audio_vocab_size * cfg.audio_num_codebooks;
    let table = |name, source: &str, shape: &[usize], stored: Vec<usize>| -> Result<Table<'_>> {
        Ok(Table {
            name,
            source: expect_shape(ckpt, source, shape)?,
            shape: stored,
        })
    };
    write_f32_tables(
        path,
        &[
            table(
                tn::TEXT_EMBEDDINGS,
                "text_embeddings.weight",
                &[cfg.text_vocab_size, d],
                vec![cfg.text_vocab_size, d],
            )?,
            table(
                tn::AUDIO_EMBEDDINGS,
                "audio_embeddings.weight",
                &[audio_rows, d],
                vec![audio_rows, d],
            )?,
            table(
                tn::UNCONDITIONAL_TEXT_EMBEDDING,
                "unconditional_text_embedding.weight",
                &[1, d],
                vec![1, d],
            )?,
            table(tn::MUQ_BIAS, "muq_linear.bias", &[d], vec![d])?,
        ],
    )
}

/// Declares the shared inputs and cache inputs of a stack `{prefix}.layers.*`,
/// runs its layers on the f32 residual stream `x` and returns the result with
/// each layer's `(new_key, new_value)`.
fn stack(
    g: &mut GraphBuilder,
    ckpt: &Checkpoint,
    prefix: &str,
    p: &FlavorParams,
    nm: Numerics,
    x: &Value,
) -> Result<(Value, Vec<(Value, Value)>)> {
    let (kv, hd) = (p.num_kv_heads, p.head_dim());
    let positions = g.input(io::POSITIONS, DType::I64, &[Dim::from("seq")]);
    let bias = g.input(io::ATTN_BIAS, DType::F32, &[Dim::from("seq"), "total".into()]);
    let past: Vec<(Value, Value)> = (0..p.num_layers)
        .map(|i| {
            let k = g.input(&io::past_key(i), nm.compute, &key_dims(kv, hd, "capacity"));
            let v = g.input(&io::past_value(i), nm.compute, &value_dims(kv, hd, "capacity"));
            (k, v)
        })
        .collect();
    let ctx = blocks::attn_context(g, p, &positions, &bias, &past[0].1)?;
    let st = Stack { ckpt, params: p, nm };
    let mut x = x.clone();
    let mut new = Vec::with_capacity(past.len());
    for (i, (pk, pv)) in past.iter().enumerate() {
        let out = blocks::transformer_layer(g, st, &format!("{prefix}.layers.{i}"), &x, &ctx, (pk, pv))?;
        new.push((out.new_key, out.new_value));
        x = out.x;
    }
    Ok((x, new))
}

/// Declares every layer's new keys/values as graph outputs.
fn output_cache(g: &mut GraphBuilder, p: &FlavorParams, nm: Numerics, cache: &[(Value, Value)]) {
    let (kv, hd) = (p.num_kv_heads, p.head_dim());
    for (i, (k, v)) in cache.iter().enumerate() {
        g.output(k, &io::new_key(i), nm.compute, &key_dims(kv, hd, "seq"));
        g.output(v, &io::new_value(i), nm.compute, &value_dims(kv, hd, "seq"));
    }
}

/// Final RMSNorm of `{prefix}.norm` at every position, `[B, S, D]` (the norm is
/// per position, so its last row equals the norm of the last position alone).
fn final_norm(g: &mut GraphBuilder, ckpt: &Checkpoint, prefix: &str, p: &FlavorParams, x: &Value) -> Result<Value> {
    let scale = expect_shape(ckpt, &format!("{prefix}.norm.scale"), &[p.embed_dim])?;
    blocks::rms_norm(g, x, &scale, p.norm_eps)
}

/// The last position of `x` `[B, S, N]`, as `[B, N]`.
fn last_position(g: &mut GraphBuilder, scope: &str, x: &Value) -> Value {
    g.with_scope(scope, |g| {
        let s = g.slice(x, &[-1], &[i64::MAX], &[1]);
        g.squeeze(&s, &[1])
    })
}

fn key_dims(kv: usize, hd: usize, len: &str) -> [Dim; 4] {
    [Dim::from("batch"), kv.into(), hd.into(), len.into()]
}

fn value_dims(kv: usize, hd: usize, len: &str) -> [Dim; 4] {
    [Dim::from("batch"), kv.into(), len.into(), hd.into()]
}
