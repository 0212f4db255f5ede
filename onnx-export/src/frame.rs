//! The frame graph `frame.onnx`: one call per audio frame. A backbone step
//! (any number of new rows: the prompt prefill or one fed-back frame), then
//! codebook 0's head, then for each codebook the guided sampling and the
//! decoder's next step, unrolled over the 7 (`n_codebooks − 1`) decoder steps,
//! each with its audio head known statically. I/O: [`heart::engine::io`]
//! (backbone inputs, cache outputs) and [`heart::engine::frame_io`].
//!
//! Why: a frame of the per-step graphs is `n_codebooks` session calls with the
//! sampling in Rust between them; the host round trips and the ~170 small
//! nodes per decoder call cost as much as the math on small models, and no
//! CUDA graph can cover a frame the host has to finish.
//!
//! # Same numbers as the per-step graphs
//! Every product is the node the per-step graphs run, on the same shapes:
//! `codebook0_head` on every new row then the last row's logits (as
//! `backbone.onnx`), the decoder at cache capacity `n_codebooks` with unused
//! slots masked by `−inf` (as the runtime's decoder cache), the heads on the
//! last position. The decoder's cache lives in the graph: the new keys and
//! values of the frame's earlier steps, padded with zeros to the capacity.
//!
//! # Sampling, as `heart_runtime::lm::sampler` does it
//! Per codebook: `u + (c − u)·cfg_scale` of row 0 (`c`) and the last row (`u`;
//! with one row this is `c` itself), `/ temperature`, threshold = the k-th
//! largest value (ties at it are kept; see [`kth_largest`] for the two forms),
//! `p = x < threshold ? 0 : exp(x − max)`, `p /= Σp`, then the exponential race
//! `ArgMax(p / q)` (first index on ties) with `q` the codebook's row of the
//! `noise` input. The noise is an input so a call is deterministic and
//! reproducible with recorded noise, and the graph can be captured. The
//! arithmetic is the sampler's, operation for operation; only `Exp` and the
//! order of `Σp` may differ from Rust's by an ulp, which changes a code only
//! when two candidates' `p/q` agree to about 1e-7 relative.
//!
//! Standard ONNX operators only (`TopK`, `ReduceMin`, `ArgMax`, `Gather`,
//! `Expand`, …) besides what the per-step graphs use. In the TensorRT form
//! ([`GraphForm::TensorRt`]: the linear layers in the TensorRT lowering, each
//! head a separate weight as the walk knows its codebook statically, `TopK`
//! with a constant `K`) TensorRT-RTX's parser and builder take it whole.

use std::path::Path;

use heart::checkpoint::{Checkpoint, TensorRef};
use heart::config::{FlavorParams, MulaConfig};
use heart::engine::frame_io;

use crate::blocks::{self, AttnContext, Numerics, Stack, cast_if, expect_shape};
use crate::error::Result;
use crate::external::WrittenFile;
use crate::graph::{Attr, DType, GraphBuilder, Value};
use crate::linears::{GraphForm, HeadWeight, LinearGroup, Linears, LmOptions};
use crate::lm::{backbone_call, final_norm, last_position, output_cache};

/// Rows of the audio table streamed per chunk (bounds the export's buffer).
const TABLE_CHUNK_ROWS: usize = 1024;

/// Writes `frame.onnx` (+ data) for checkpoint `ckpt` with the linear layers
/// of `opts` (its probes and layer taps are ignored: the frame graph serves
/// plain decoding only). Returns the files written.
pub fn export_frame(ckpt: &Checkpoint, cfg: &MulaConfig, opts: &LmOptions, path: &Path) -> Result<Vec<WrittenFile>> {
    let opts = LmOptions {
        probes: Default::default(),
        layer_taps: false,
        ..opts.clone()
    };
    let (pb, n, v) = (&cfg.backbone, cfg.audio_num_codebooks, cfg.audio_vocab_size);
    let nm = opts.numerics;
    let mut lin = Linears::new(&opts);
    let mut g = GraphBuilder::create(path, "heartmula_frame")?;
    g.metadata("heart.graph", "frame");
    let backbone = backbone_call(&mut g, &mut lin, ckpt, cfg)?;
    let sampler = SamplerInputs {
        form: opts.form,
        vocab: v,
        noise: g.input(frame_io::NOISE, DType::F32, &[n.into(), v.into()]),
        temperature: g.input(frame_io::TEMPERATURE, DType::F32, &[]),
        top_k: g.input(frame_io::TOP_K, DType::I64, &[1.into()]),
        cfg_scale: g.input(frame_io::CFG_SCALE, DType::F32, &[]),
    };
    let (hidden, cache) = (backbone.hidden, backbone.cache);
    let c0 = sample(&mut g, &sampler, &backbone.logits, 0);
    let codes = decoder_walk(&mut g, &mut lin, ckpt, cfg, &sampler, &hidden, c0)?;
    let codes = g.concat(&codes.iter().collect::<Vec<_>>(), 0);
    g.output(&codes, frame_io::CODES, DType::I64, &[n.into()]);
    output_cache(&mut g, pb, nm, &cache);
    Ok(lin.finish(g)?.0)
}

/// The sampling inputs every codebook reads.
struct SamplerInputs {
    form: GraphForm,
    vocab: usize,
    noise: Value,
    temperature: Value,
    top_k: Value,
    cfg_scale: Value,
}

/// The guided, tempered top-k exponential race over `logits` (f32 `[B, V]`)
/// with noise row `codebook`; the code as int64 `[1]`.
fn sample(g: &mut GraphBuilder, s: &SamplerInputs, logits: &Value, codebook: usize) -> Value {
    g.with_scope(&format!("sample_{codebook}"), |g| {
        let cond = g.slice(logits, &[0], &[1], &[0]);
        let uncond = g.slice(logits, &[-1], &[i64::MAX], &[0]);
        let diff = g.sub(&cond, &uncond);
        let pull = g.mul(&diff, &s.cfg_scale);
        let guided = g.add(&uncond, &pull);
        let x = g.div(&guided, &s.temperature);
        let last = g.const_i64(&[-1]);
        let keep = vec![Attr::int("keepdims", 1)];
        let threshold = kth_largest(g, s, &x, &last);
        let max = g.node("ReduceMax", &[&x, &last], keep.clone());
        let shifted = g.sub(&x, &max);
        let e = g.exp(&shifted);
        let below = g.node("Less", &[&x, &threshold], vec![]);
        let zero = g.scalar_f(0.0, DType::F32);
        let p = g.where_(&below, &zero, &e);
        let sum = g.node("ReduceSum", &[&p, &last], keep);
        let probs = g.div(&p, &sum);
        let q = g.slice(&s.noise, &[codebook as i64], &[codebook as i64 + 1], &[0]);
        let race = g.div(&probs, &q);
        g.node(
            "ArgMax",
            &[&race],
            vec![
                Attr::int("axis", -1),
                Attr::int("keepdims", 0),
                Attr::int("select_last_index", 0),
            ],
        )
    })
}

/// The `top_k`-th largest value of `x` (`[1, V]`), `[1, 1]`. CPU form:
/// `TopK` of `top_k` values, then their minimum (ONNX Runtime's partial sort
/// costs what k does). TensorRT form: TensorRT's `TopK` takes `K` at build
/// time (or as a shape tensor every profile has to bound) and at most
/// [`frame_io::TOP_K_MAX`], so it sorts `min(V, TOP_K_MAX)` values once and
/// `Gather`s index `top_k − 1`. Both give the same value: ties at the k-th
/// place are equal whichever of them `TopK` keeps.
fn kth_largest(g: &mut GraphBuilder, s: &SamplerInputs, x: &Value, last: &Value) -> Value {
    let topk = |g: &mut GraphBuilder, k: &Value| {
        let attrs = vec![Attr::int("axis", -1), Attr::int("largest", 1), Attr::int("sorted", 1)];
        g.node_ext("", "TopK", &[Some(x), Some(k)], 2, attrs).swap_remove(0)
    };
    match s.form {
        GraphForm::Cpu => {
            let values = topk(g, &s.top_k);
            g.node("ReduceMin", &[&values, last], vec![Attr::int("keepdims", 1)])
        }
        GraphForm::TensorRt => {
            let k = g.const_i64(&[s.vocab.min(frame_io::TOP_K_MAX) as i64]);
            let values = topk(g, &k);
            let one = g.const_i64(&[1]);
            let index = g.sub(&s.top_k, &one);
            g.gather(&values, &index, -1)
        }
    }
}

/// The decoder's walk over codebooks `1..n` from the backbone's last hidden
/// state `hidden` (`[B, D]`) and codebook 0's code `c0`; returns every
/// codebook's code (`[1]` each, `c0` first).
fn decoder_walk(
    g: &mut GraphBuilder,
    lin: &mut Linears<'_>,
    ckpt: &Checkpoint,
    cfg: &MulaConfig,
    sampler: &SamplerInputs,
    hidden: &Value,
    c0: Value,
) -> Result<Vec<Value>> {
    let (pb, p) = (&cfg.backbone, &cfg.decoder);
    let (n, v) = (cfg.audio_num_codebooks, cfg.audio_vocab_size);
    let nm = lin.numerics();
    let table = audio_table(g, ckpt, cfg)?;
    let proj = expect_shape(ckpt, "projection.weight", &[p.embed_dim, pb.embed_dim])?;
    let heads_t = expect_shape(ckpt, "audio_head", &[n - 1, p.embed_dim, v])?;
    let heads = (0..n - 1)
        .map(|i| lin.audio_head(g, &heads_t, i))
        .collect::<Result<Vec<HeadWeight>>>()?;
    let rope = blocks::rope_inits(g, p, "decoder.rope")?;
    let cache = DecoderCache::new(g, p, nm, hidden, n)?;
    let st = Stack {
        ckpt,
        name: "decoder",
        params: p,
        nm,
    };
    let row = g.with_scope("decoder", |g| g.unsqueeze(hidden, &[1]));
    let e0 = embed(g, &table, &c0, 0, v, hidden);
    let mut input = g.concat(&[&row, &e0], 1);
    let mut codes = vec![c0];
    let mut layers: Vec<Vec<(Value, Value)>> = vec![Vec::new(); p.num_layers];
    let mut len = 0;
    for k in 1..n {
        let s = if k == 1 { 2 } else { 1 };
        let ctx = g.with_scope(&format!("decoder.step_{k}"), |g| cache.context(g, p, &rope, len, s))?;
        let e = cast_if(g, &input, DType::F32, nm.compute);
        let mut x = lin.linear(g, &e, &proj, LinearGroup::Projection, 3)?;
        x = cast_if(g, &x, nm.compute, DType::F32);
        for (i, new) in layers.iter_mut().enumerate() {
            let (pk, pv) = cache.past(g, new);
            let out = blocks::transformer_layer(g, st, lin, &format!("decoder.layers.{i}"), &x, &ctx, (&pk, &pv))?;
            new.push((out.new_key, out.new_value));
            x = out.x;
        }
        len += s;
        let normed = final_norm(g, ckpt, "decoder", p, &x)?;
        let normed = cast_if(g, &normed, DType::F32, nm.compute);
        let normed = lin.input(g, &normed, "audio_head", p.embed_dim, LinearGroup::AudioHead, 3)?;
        let h = g.with_scope("decoder", |g| last_position(g, &normed));
        let logits = g.with_scope(&format!("audio_head_{k}"), |g| {
            let l = heads[k - 1].apply(g, &h);
            cast_if(g, &l, nm.compute, DType::F32)
        });
        let code = sample(g, sampler, &logits, k);
        if k + 1 < n {
            input = embed(g, &table, &code, k, v, hidden);
        }
        codes.push(code);
    }
    // The walk reads every decoder weight once per step; the export is done
    // with them.
    ckpt.release_prefix("decoder.");
    Ok(codes)
}

/// `audio_embeddings` rows of codebooks `0..n − 1` (the decoder never embeds
/// the last codebook's code) as an f32 initializer `[(n − 1)·V, D]`.
fn audio_table(g: &mut GraphBuilder, ckpt: &Checkpoint, cfg: &MulaConfig) -> Result<Value> {
    let (n, v, d) = (cfg.audio_num_codebooks, cfg.audio_vocab_size, cfg.backbone.embed_dim);
    let t: TensorRef<'_> = expect_shape(ckpt, "audio_embeddings.weight", &[n * v, d])?;
    let rows = (n - 1) * v;
    g.init_stream("decoder.audio_embeddings", DType::F32, &[rows, d], |sink| {
        let mut buf = vec![0f32; TABLE_CHUNK_ROWS * d];
        for start in (0..rows).step_by(TABLE_CHUNK_ROWS) {
            let chunk = &mut buf[..(rows - start).min(TABLE_CHUNK_ROWS) * d];
            t.read_f32_into(start * d, chunk)?;
            sink.push_f32(chunk)?;
        }
        Ok(())
    })
}

/// The embedding of codebook `k`'s `code` (`[1]`) in every batch row of
/// `hidden`, `[B, 1, D]` f32.
fn embed(g: &mut GraphBuilder, table: &Value, code: &Value, k: usize, v: usize, hidden: &Value) -> Value {
    g.with_scope(&format!("embed_{k}"), |g| {
        let offset = g.const_i64(&[(k * v) as i64]);
        let row = g.add(code, &offset);
        let batch = g.node("Shape", &[hidden], vec![Attr::int("start", 0), Attr::int("end", 1)]);
        let rows = g.expand(&row, &batch);
        let e = g.gather(table, &rows, 0);
        g.unsqueeze(&e, &[1])
    })
}

/// The decoder's in-graph cache: capacity `n` positions, the frame's new keys
/// and values so far followed by zeros (masked, as the runtime's cache masks
/// unused slots).
struct DecoderCache {
    capacity: usize,
    zero_keys: Value,
    zero_values: Value,
}

impl DecoderCache {
    fn new(g: &mut GraphBuilder, p: &FlavorParams, nm: Numerics, hidden: &Value, capacity: usize) -> Result<Self> {
        let (kv, hd) = (p.num_kv_heads, p.head_dim());
        let zeros = vec![0f32; kv * hd * capacity];
        let k = g.init_f32("decoder.cache.zero_keys", nm.compute, &[1, kv, hd, capacity], &zeros)?;
        let v = g.init_f32("decoder.cache.zero_values", nm.compute, &[1, kv, capacity, hd], &zeros)?;
        Ok(g.with_scope("decoder.cache", |g| {
            let batch = g.node("Shape", &[hidden], vec![Attr::int("start", 0), Attr::int("end", 1)]);
            let ones = g.const_i64(&[1, 1, 1]);
            let shape = g.concat(&[&batch, &ones], 0);
            Self {
                capacity,
                zero_keys: g.expand(&k, &shape),
                zero_values: g.expand(&v, &shape),
            }
        }))
    }

    /// The attention context of a step of `s` new rows after `len` cached
    /// ones: positions `len..len + s`, the runtime's `attn_bias` for that cache.
    fn context(
        &self,
        g: &mut GraphBuilder,
        p: &FlavorParams,
        rope: &(Value, Value),
        len: usize,
        s: usize,
    ) -> Result<AttnContext> {
        let c = self.capacity;
        let positions = g.const_i64(&(len as i64..(len + s) as i64).collect::<Vec<_>>());
        let width = c + s;
        let mut bias = vec![f32::NEG_INFINITY; s * width];
        for (i, row) in bias.chunks_exact_mut(width).enumerate() {
            row[..len].fill(0.0);
            row[c..=c + i].fill(0.0);
        }
        let name = format!("decoder.attn_bias_{len}_{s}");
        let bias = g.init_f32(&name, DType::F32, &[s, width], &bias)?;
        Ok(blocks::attn_context_with(
            g,
            p,
            rope,
            &positions,
            &bias,
            &self.zero_values,
        ))
    }

    /// One layer's past keys `[B, KV, hd, C]` and values `[B, KV, C, hd]`: its
    /// `new` entries of this frame, then zeros.
    fn past(&self, g: &mut GraphBuilder, new: &[(Value, Value)]) -> (Value, Value) {
        if new.is_empty() {
            return (self.zero_keys.clone(), self.zero_values.clone());
        }
        // The first step wrote two positions, every later one one.
        let fill = (self.capacity - (new.len() + 1)) as i64;
        let keys: Vec<&Value> = new.iter().map(|(k, _)| k).collect();
        let values: Vec<&Value> = new.iter().map(|(_, v)| v).collect();
        let pad_k = g.slice(&self.zero_keys, &[0], &[fill], &[3]);
        let pad_v = g.slice(&self.zero_values, &[0], &[fill], &[2]);
        let k = g.concat(&[keys.as_slice(), &[&pad_k]].concat(), 3);
        let v = g.concat(&[values.as_slice(), &[&pad_v]].concat(), 2);
        (k, v)
    }
}
