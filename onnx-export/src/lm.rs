//! HeartMuLa as two ONNX graphs plus an embedding-table file (spec §2).
//!
//! - `backbone.onnx`: summed frame embeddings → backbone stack → final norm →
//!   `codebook0_head`, at every position (`hidden_all`, `c0_logits_all`) and at
//!   the last one (`hidden`, `c0_logits`, slices of the former).
//! - `decoder.onnx`: `projection` → decoder stack → final norm at the last
//!   position → `audio_head[codebook - 1]` (`logits`); on a whole-frame call
//!   also every codebook's logits at once (`logits_all`), each head one node
//!   (`heads_once`). In the TensorRT graph form ([`GraphForm::TensorRt`])
//!   the head is `Gather`ed from the stacked heads (`gather_head`) and
//!   `logits_all` is one batched product (`frame_logits_stacked`).
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
//! cache design is in [`crate::blocks`]. What is quantized, and how, is an
//! [`LmOptions`] (see [`crate::linears`]): [`export_lm`] takes the default for a
//! precision, [`export_lm_with`] any options (build profiles, calibration
//! variants with `probe.*` outputs, `tap.layer_*` outputs for the A/B).

use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::{FlavorParams, MulaConfig};
use heart::engine::{self, io, tables as tn};
use heart::precision::Precision;
use heart::quant::blockwise::IntBits;

use crate::blocks::{self, Numerics, Stack, cast_if, expect_shape};
use crate::error::{ExportError, Result};
use crate::external::WrittenFile;
use crate::graph::{Attr, DType, Dim, GraphBuilder, Value};
pub use crate::linears::{GraphForm, LinearGroup, LmOptions, ProbeSite, QuantFormat, QuantPlan};
use crate::linears::{HeadWeight, Linears, Lowering};
use crate::quant::NBits;
use crate::tables::{Table, write_f32_tables};

/// Dense numerics of `precision`: weights and compute in its
/// [`Precision::default_compute`] dtype (fp32, or fp16 for fp16 / fp8 / fp4,
/// where this is the dtype of everything that is not quantized).
pub fn numerics(precision: Precision) -> Numerics {
    let dtype = match precision.default_compute() {
        Precision::Fp16 => DType::F16,
        _ => DType::F32,
    };
    Numerics {
        weights: dtype,
        compute: dtype,
    }
}

/// The groups quantized by default: every linear layer of both stacks and the
/// projection; the heads stay dense (the default build profiles say why).
pub const DEFAULT_QUANTIZED: [LinearGroup; 5] = [
    LinearGroup::BackboneAttention,
    LinearGroup::BackboneMlp,
    LinearGroup::DecoderAttention,
    LinearGroup::DecoderMlp,
    LinearGroup::Projection,
];

impl LmOptions {
    /// The default export of `precision`: dense fp32 / fp16, weight-only
    /// FP8 / NVFP4 (portable lowering) of [`DEFAULT_QUANTIZED`] with fp16
    /// compute, or int8 / int4 `MatMulNBits` (accuracy level 4) of the same
    /// groups with f32 compute. No probes, no taps.
    pub fn for_precision(precision: Precision) -> Self {
        let weights = match precision {
            Precision::Fp32 | Precision::Fp16 => None,
            Precision::Fp8 => Some(QuantFormat::Fp8),
            Precision::Fp4 => Some(QuantFormat::Nvfp4),
            Precision::Int8 => Some(QuantFormat::Int(NBits::new(IntBits::Int8))),
            Precision::Int4 => Some(QuantFormat::Int(NBits::new(IntBits::Int4))),
        };
        Self {
            numerics: numerics(precision),
            quant: weights.map(|weights| QuantPlan {
                weights,
                lowering: Lowering::Portable,
                groups: DEFAULT_QUANTIZED.into_iter().collect(),
                activations: None,
            }),
            probes: Default::default(),
            layer_taps: false,
            form: GraphForm::Cpu,
        }
    }
}

/// What [`export_lm_with`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LmExport {
    /// Every file written, with sizes.
    pub files: Vec<WrittenFile>,
    /// `probe.*` outputs of the backbone graph.
    pub backbone_probes: Vec<ProbeSite>,
    /// `probe.*` outputs of the decoder graph.
    pub decoder_probes: Vec<ProbeSite>,
}

/// Exports the backbone and decoder graphs and the embedding tables of the
/// HeartMuLa checkpoint `ckpt` into `out_dir` (which must exist) with the
/// default options of `precision` ([`LmOptions::for_precision`]). Returns every
/// file written, with sizes.
pub fn export_lm(
    ckpt: &Checkpoint,
    cfg: &MulaConfig,
    precision: Precision,
    out_dir: &Path,
) -> Result<Vec<WrittenFile>> {
    Ok(export_lm_with(ckpt, cfg, &LmOptions::for_precision(precision), out_dir)?.files)
}

/// [`export_lm`] with explicit options.
pub fn export_lm_with(ckpt: &Checkpoint, cfg: &MulaConfig, opts: &LmOptions, out_dir: &Path) -> Result<LmExport> {
    let (mut files, backbone_probes) = export_backbone(ckpt, cfg, opts, &out_dir.join(engine::BACKBONE_GRAPH))?;
    let (decoder_files, decoder_probes) = export_decoder(ckpt, cfg, opts, &out_dir.join(engine::DECODER_GRAPH))?;
    files.extend(decoder_files);
    files.push(export_tables(ckpt, cfg, &out_dir.join(engine::LM_TABLES))?);
    Ok(LmExport {
        files,
        backbone_probes,
        decoder_probes,
    })
}

/// Writes `backbone.onnx` (+ data); returns the files and its probes.
pub fn export_backbone(
    ckpt: &Checkpoint,
    cfg: &MulaConfig,
    opts: &LmOptions,
    path: &Path,
) -> Result<(Vec<WrittenFile>, Vec<ProbeSite>)> {
    let p = &cfg.backbone;
    let nm = opts.numerics;
    let mut lin = Linears::new(opts);
    let mut g = GraphBuilder::create(path, "heartmula_backbone")?;
    g.metadata("heart.graph", "backbone");
    let b = backbone_call(&mut g, &mut lin, ckpt, cfg)?;
    let v = cfg.audio_vocab_size;
    let row = [Dim::from("batch"), p.embed_dim.into()];
    g.output(&b.hidden, io::HIDDEN, DType::F32, &row);
    g.output(&b.logits, io::C0_LOGITS, DType::F32, &[Dim::from("batch"), v.into()]);
    output_cache(&mut g, p, nm, &b.cache);
    let per_position = |n: usize| [Dim::from("batch"), "seq".into(), n.into()];
    g.output(&b.hidden_all, io::HIDDEN_ALL, DType::F32, &per_position(p.embed_dim));
    g.output(&b.logits_all, io::C0_LOGITS_ALL, DType::F32, &per_position(v));
    output_taps(&mut g, p, &b.taps);
    lin.finish(g)
}

/// What [`backbone_call`] returns: the final-norm output at every position
/// (`[B, S, D]` f32) and at the last, `codebook0_head` of them (f32, `[B, S, V]`
/// and `[B, V]`), each layer's new `(key, value)` and the layer taps.
pub(crate) struct BackboneCall {
    pub hidden_all: Value,
    pub hidden: Value,
    pub logits_all: Value,
    pub logits: Value,
    pub cache: Vec<(Value, Value)>,
    pub taps: Vec<Value>,
}

/// Declares the backbone's inputs (`embeds` first, then the stack's) and
/// builds its call: the stack, the final norm and `codebook0_head` at every
/// position (so one row's logits are the same whatever the call's length).
pub(crate) fn backbone_call(
    g: &mut GraphBuilder,
    lin: &mut Linears<'_>,
    ckpt: &Checkpoint,
    cfg: &MulaConfig,
) -> Result<BackboneCall> {
    let p = &cfg.backbone;
    let nm = lin.numerics();
    let embeds = g.input(
        io::EMBEDS,
        DType::F32,
        &[Dim::from("batch"), "seq".into(), p.embed_dim.into()],
    );
    let (x, cache, taps) = stack(g, lin, ckpt, "backbone", p, &embeds)?;
    let hidden_all = final_norm(g, ckpt, "backbone", p, &x)?;
    let hidden = g.with_scope("backbone", |g| last_position(g, &hidden_all));
    let head = expect_shape(ckpt, "codebook0_head.weight", &[cfg.audio_vocab_size, p.embed_dim])?;
    let h = cast_if(g, &hidden_all, DType::F32, nm.compute);
    let logits_all = lin.linear(g, &h, &head, LinearGroup::Codebook0Head, 3)?;
    let logits_all = cast_if(g, &logits_all, nm.compute, DType::F32);
    let logits = g.with_scope("codebook0_head", |g| last_position(g, &logits_all));
    Ok(BackboneCall {
        hidden_all,
        hidden,
        logits_all,
        logits,
        cache,
        taps,
    })
}

/// Writes `decoder.onnx` (+ data); returns the files and its probes.
pub fn export_decoder(
    ckpt: &Checkpoint,
    cfg: &MulaConfig,
    opts: &LmOptions,
    path: &Path,
) -> Result<(Vec<WrittenFile>, Vec<ProbeSite>)> {
    let (pb, p) = (&cfg.backbone, &cfg.decoder);
    let v = cfg.audio_vocab_size;
    let nm = opts.numerics;
    let mut lin = Linears::new(opts);
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
    let x = lin.linear(&mut g, &e, &proj, LinearGroup::Projection, 3)?;
    let x = cast_if(&mut g, &x, nm.compute, DType::F32);
    let (x, cache, taps) = stack(&mut g, &mut lin, ckpt, "decoder", p, &x)?;
    let normed = final_norm(&mut g, ckpt, "decoder", p, &x)?;
    let heads_t = expect_shape(ckpt, "audio_head", &[cfg.audio_num_codebooks - 1, p.embed_dim, v])?;
    let heads = match opts.form {
        GraphForm::Cpu => Heads::Separate(
            (0..cfg.audio_num_codebooks - 1)
                .map(|i| lin.audio_head(&mut g, &heads_t, i))
                .collect::<Result<Vec<_>>>()?,
        ),
        GraphForm::TensorRt => Heads::Stacked {
            weight: lin.audio_heads_stacked(&mut g, &heads_t)?,
            count: cfg.audio_num_codebooks - 1,
        },
    };
    // The heads' input, fake-quantized once for both outputs when the profile
    // quantizes it (per row, so the last row of the result is the last row's).
    let normed = cast_if(&mut g, &normed, DType::F32, nm.compute);
    let normed = lin.input(&mut g, &normed, "audio_head", p.embed_dim, LinearGroup::AudioHead, 3)?;
    let h = g.with_scope("decoder", |g| last_position(g, &normed));
    let (logits, frame) = g.with_scope("audio_head", |g| -> Result<(Value, Value)> {
        let (l, frame) = match &heads {
            Heads::Separate(heads) => heads_once(g, &codebook, &normed, &h, heads)?,
            Heads::Stacked { weight, count } => (
                gather_head(g, &codebook, &h, weight, *count),
                frame_logits_stacked(g, &normed, weight, *count),
            ),
        };
        Ok((
            cast_if(g, &l, nm.compute, DType::F32),
            cast_if(g, &frame, nm.compute, DType::F32),
        ))
    })?;
    g.output(&logits, io::LOGITS, DType::F32, &[Dim::from("batch"), v.into()]);
    output_cache(&mut g, p, nm, &cache);
    g.output(
        &frame,
        io::LOGITS_ALL,
        DType::F32,
        &[Dim::from("batch"), "codebooks".into(), v.into()],
    );
    output_taps(&mut g, p, &taps);
    lin.finish(g)
}

/// The decoder's audio heads as its graph form applies them.
enum Heads {
    /// One weight per head, each applied by one node ([`GraphForm::Cpu`],
    /// see [`heads_once`]).
    Separate(Vec<HeadWeight>),
    /// All heads as one `[count, in, out]` value, selected by `Gather`
    /// ([`GraphForm::TensorRt`]).
    Stacked {
        /// The stacked heads in the compute dtype.
        weight: Value,
        /// How many heads.
        count: usize,
    },
}

/// `h @ stacked[clip(codebook, 1, count) - 1]` for `h` `[B, in]` and the
/// stacked heads `[count, in, out]`: a `Gather` of one head by the scalar index
/// (rank 2, whatever the codebook), then one `MatMul`. The TensorRT form of
/// [`heads_once`]'s `logits`: TensorRT keeps the gathered head in place
/// rather than copying it. ONNX Runtime CPU would copy and repack a 100 MB
/// slice every call at the real size (measured 38 ms instead of 17 ms per call
/// at `[2, 3072] × [3072, 8197]` f32), which is why the CPU form keeps one
/// initializer per head.
fn gather_head(g: &mut GraphBuilder, codebook: &Value, h: &Value, stacked: &Value, count: usize) -> Value {
    let lo = g.scalar_i64(1);
    let hi = g.scalar_i64(count as i64);
    let k = g.node("Max", &[codebook, &lo], vec![]);
    let k = g.node("Min", &[&k, &hi], vec![]);
    let index = g.sub(&k, &lo);
    let head = g.gather(stacked, &index, 0);
    g.matmul(h, &head)
}

/// [`heads_once`]'s `logits_all` in the TensorRT form: with `S` the call's
/// positions and `n = count` when `S = count + 1` (a whole-frame call) and 0
/// otherwise, rows `1..=n` of `normed` (`[B, S, in]`) times heads `0..n` of
/// `stacked`, `[B, n, out]` in the compute dtype. Both slices are empty on
/// other calls, so the per-codebook walk multiplies nothing.
fn frame_logits_stacked(g: &mut GraphBuilder, normed: &Value, stacked: &Value, count: usize) -> Value {
    let is_whole = whole_frame(g, normed, count);
    let heads = g.const_i64(&[count as i64]);
    let n = g.mul(&is_whole, &heads);
    let one = g.const_i64(&[1]);
    let zero = g.const_i64(&[0]);
    let end = g.add(&n, &one);
    let rows = g.node("Slice", &[normed, &one, &end, &one], vec![]);
    let weights = g.node("Slice", &[stacked, &zero, &n, &zero], vec![]);
    let rows = g.transpose(&rows, &[1, 0, 2]);
    let products = g.matmul(&rows, &weights);
    g.transpose(&products, &[1, 0, 2])
}

/// int64 `[1]`: 1 on a whole-frame call (`normed` `[B, S, in]` with `S =
/// count + 1` rows: the backbone hidden state, then codes `0..count`), else 0.
fn whole_frame(g: &mut GraphBuilder, normed: &Value, count: usize) -> Value {
    let seq = g.node("Shape", &[normed], vec![Attr::int("start", 1), Attr::int("end", 2)]);
    let whole = g.const_i64(&[count as i64 + 1]);
    let is_whole = g.node("Equal", &[&seq, &whole], vec![]);
    g.cast(&is_whole, DType::I64)
}

/// Both head outputs of the CPU form with each head applied by exactly one
/// node: ONNX Runtime prepacks an initializer once per node that reads it, so
/// the former form (one `If` per head for `logits`, all heads again in a
/// whole-frame `If`) held every head packed twice. Measured on 1.31.1 at the
/// small size: an int4-heads decoder session 118 → 83 MiB resident, an fp32
/// one peaking at 404 instead of 628 MiB while it loads; outputs bit for bit
/// the same. `normed` is the heads' input `[B, S, D]` (the final-norm output
/// in the compute dtype, fake-quantized when the heads' activations are), `h`
/// its last row `[B, D]`. Head `k` (codebook `k`, `1..=count`) multiplies the
/// rows `[h if k = clip(codebook, 1, count)] ++ [normed[:, k] if S = count +
/// 1]`, zero to two of them; its product is split back into
/// - the call's `logits` `[B, V]`: `h · audio_head[clip(codebook) − 1]`
///   (codebooks past the last head use the last, before the first the first);
/// - `logits_all` `[B, n, V]`: on a whole-frame call (`S = count + 1`: the
///   backbone hidden state, then codes `0..count` at positions `0..=count`)
///   row `k`'s state times head `k` for every `k`, i.e. every codebook's
///   logits given the frame's earlier codes in one call (speculative
///   scoring); on any other call empty, `[B, 0, V]`.
///
/// No `If`: a product of zero rows costs nothing, and a row's result does not
/// depend on the other rows of the product (checked bit for bit on ONNX
/// Runtime 1.31.1 CPU for `MatMul` f32/f16 and `MatMulNBits`).
fn heads_once(
    g: &mut GraphBuilder,
    codebook: &Value,
    normed: &Value,
    h: &Value,
    heads: &[HeadWeight],
) -> Result<(Value, Value)> {
    if heads.is_empty() {
        return Err(ExportError::Unsupported {
            what: "a decoder without audio heads (audio_num_codebooks < 2)".into(),
        });
    }
    let count = heads.len() as i64;
    let lo = g.scalar_i64(1);
    let hi = g.scalar_i64(count);
    let index = g.node("Clip", &[codebook, &lo, &hi], vec![]);
    let index = g.unsqueeze(&index, &[0]);
    let frame_rows = whole_frame(g, normed, heads.len());
    let last = g.unsqueeze(h, &[1]);
    let (zero, axis, end) = (g.const_i64(&[0]), g.const_i64(&[1]), g.const_i64(&[i64::MAX]));
    let mut selected = Vec::with_capacity(heads.len());
    let mut frame = Vec::with_capacity(heads.len());
    for (i, head) in heads.iter().enumerate() {
        let k = g.const_i64(&[i as i64 + 1]);
        let is_k = g.node("Equal", &[&index, &k], vec![]);
        let mine = g.cast(&is_k, DType::I64);
        let own = g.node("Slice", &[&last, &zero, &mine, &axis], vec![]);
        let row_end = g.add(&k, &frame_rows);
        let row = g.node("Slice", &[normed, &k, &row_end, &axis], vec![]);
        let rows = g.concat(&[&own, &row], 1);
        let y = head.apply(g, &rows);
        selected.push(g.node("Slice", &[&y, &zero, &mine, &axis], vec![]));
        frame.push(g.node("Slice", &[&y, &mine, &end, &axis], vec![]));
    }
    let logits = g.concat(&selected.iter().collect::<Vec<_>>(), 1);
    let logits = g.squeeze(&logits, &[1]);
    Ok((logits, g.concat(&frame.iter().collect::<Vec<_>>(), 1)))
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

/// What [`stack`] returns: the residual stream after the last layer, each
/// layer's `(new_key, new_value)`, and (with layer taps) each layer's output.
pub(crate) type StackOut = (Value, Vec<(Value, Value)>, Vec<Value>);

/// Declares the shared inputs and cache inputs of a stack `{prefix}.layers.*`,
/// runs its layers on the f32 residual stream `x` and returns the result with
/// each layer's `(new_key, new_value)` and, when `lin`'s options ask for layer
/// taps, each layer's output.
pub(crate) fn stack(
    g: &mut GraphBuilder,
    lin: &mut Linears<'_>,
    ckpt: &Checkpoint,
    prefix: &str,
    p: &FlavorParams,
    x: &Value,
) -> Result<StackOut> {
    let nm = lin.numerics();
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
    let st = Stack {
        ckpt,
        name: prefix,
        params: p,
        nm,
    };
    let taps = lin.layer_taps();
    let mut x = x.clone();
    let mut new = Vec::with_capacity(past.len());
    let mut layer_outs = Vec::new();
    for (i, (pk, pv)) in past.iter().enumerate() {
        let layer = format!("{prefix}.layers.{i}");
        let out = blocks::transformer_layer(g, st, lin, &layer, &x, &ctx, (pk, pv))?;
        new.push((out.new_key, out.new_value));
        x = out.x;
        // The layer's weights are in the data file now: drop their checkpoint
        // pages so a 16 GB export does not hold them all resident.
        ckpt.release_prefix(&format!("{layer}."));
        if taps {
            layer_outs.push(g.with_scope(&layer, |g| last_position(g, &x)));
        }
    }
    Ok((x, new, layer_outs))
}

/// `x[:, -1, :]` of a `[B, S, D]` value.
pub(crate) fn last_position(g: &mut GraphBuilder, x: &Value) -> Value {
    let s = g.slice(x, &[-1], &[i64::MAX], &[1]);
    g.squeeze(&s, &[1])
}

/// Declares the layer taps (`tap.layer_{i}`, f32 `[B, D]`) as graph outputs.
fn output_taps(g: &mut GraphBuilder, p: &FlavorParams, taps: &[Value]) {
    for (i, t) in taps.iter().enumerate() {
        g.output(
            t,
            &io::layer_tap(i),
            DType::F32,
            &[Dim::from("batch"), p.embed_dim.into()],
        );
    }
}

/// Declares every layer's new keys/values as graph outputs.
pub(crate) fn output_cache(g: &mut GraphBuilder, p: &FlavorParams, nm: Numerics, cache: &[(Value, Value)]) {
    let (kv, hd) = (p.num_kv_heads, p.head_dim());
    for (i, (k, v)) in cache.iter().enumerate() {
        g.output(k, &io::new_key(i), nm.compute, &key_dims(kv, hd, "seq"));
        g.output(v, &io::new_value(i), nm.compute, &value_dims(kv, hd, "seq"));
    }
}

/// Final RMSNorm of `{prefix}.norm` at every position, `[B, S, D]` (the norm is
/// per position, so its last row equals the norm of the last position alone).
pub(crate) fn final_norm(
    g: &mut GraphBuilder,
    ckpt: &Checkpoint,
    prefix: &str,
    p: &FlavorParams,
    x: &Value,
) -> Result<Value> {
    let scale = expect_shape(ckpt, &format!("{prefix}.norm.scale"), &[p.embed_dim])?;
    blocks::rms_norm(g, x, &scale, p.norm_eps)
}

pub(crate) fn key_dims(kv: usize, hd: usize, len: &str) -> [Dim; 4] {
    [Dim::from("batch"), kv.into(), hd.into(), len.into()]
}

pub(crate) fn value_dims(kv: usize, hd: usize, len: &str) -> [Dim; 4] {
    [Dim::from("batch"), kv.into(), len.into(), hd.into()]
}
