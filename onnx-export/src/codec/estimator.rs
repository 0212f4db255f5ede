//! `flow_estimator.onnx`: HeartCodec's flow-matching estimator (`LlamaTransformer`,
//! spec §4.4), in standard ONNX operators (opset 21).
//!
//! I/O: `x` f32 `[B, T, in_channels]` (channel concat of Euler state, in-context
//! latents and `mu`), `timestep` f32 `[B]` → `velocity` f32 `[B, T, out_channels]`,
//! `T ≤` [`MAX_FRAMES`].
//!
//! Structure: `ProjectLayer` in → stage 1 (blocks at `inner`) → LayerNorm + final
//! modulation → `connection_proj(cat(x, s))` → stage 2 (blocks at `2·inner`) →
//! LayerNorm + modulation → `ProjectLayer` out. Build-time rewrites, all exact up
//! to f32 rounding:
//! - `ProjectLayer`'s Conv1d (k = 3, pad 1) is an im2col `MatMul` (`[x₋₁, x₀, x₊₁]`
//!   concatenated on channels) with the `3^-½` factor folded into weight and bias,
//!   so the `[B, T, C]` layout never needs a transpose.
//! - q/k/v projections are one `[D, 3D]` MatMul, gate/up one `[D, 2F]` MatMul.
//! - Interleaved-pair RoPE: q and k output features are permuted per head to
//!   `[even…, odd…]`, which turns the interleaved rotation into the split-halves
//!   form (`q·k` is unchanged by a common permutation, v is not permuted). The
//!   `1/√head_dim` score scale is folded into the q weights.
//! - RoPE cos/sin tables for positions `0..MAX_FRAMES` are initializers computed
//!   like upstream (f32 `inv_freq`, f32 angle), sliced to `T` in the graph.
//! - RMSNorm weight and `(1 + scale)` are multiplied on the `[B, 1, D]` side.

use std::f64::consts::LN_10;
use std::path::Path;

use heart::config::CodecConfig;

use super::ops::{self, Params, linear, rms_normalize, transpose};
use super::weight::DenseWeight;
use crate::error::Result;
use crate::external::WrittenFile;
use crate::graph::{Attr, DType, Dim, GraphBuilder, Value};

pub use heart::engine::codec_io::{
    ESTIMATOR_INPUT as INPUT, ESTIMATOR_OUTPUT as OUTPUT, ESTIMATOR_TIMESTEP as TIMESTEP,
};
/// Longest sequence the RoPE tables cover (one 29.76 s window of latents).
pub const MAX_FRAMES: usize = heart::geometry::WINDOW_LATENTS;

const PREFIX: &str = "flow_matching.estimator";
/// Timestep features: 256 frequencies, cos half first, times ×1000.
const FREQ_HALF: usize = 256;
const TIME_SCALE: f32 = 1000.0;
const NORM_EPS: f32 = 1e-6;
const ROPE_BASE: f32 = 10_000.0;

/// One transformer stack of the estimator.
struct Stage {
    blocks: &'static str,
    adaln: &'static str,
    table: &'static str,
    layers: usize,
    dim: usize,
    heads: usize,
    head_dim: usize,
}

/// Writes `flow_estimator.onnx` (+ data) to `path`.
pub fn build(p: &Params<'_>, cfg: &CodecConfig, path: &Path) -> Result<Vec<WrittenFile>> {
    let inner = cfg.inner_dim();
    let stages = [
        Stage {
            blocks: "transformer_blocks",
            adaln: "adaln_single",
            table: "scale_shift_table",
            layers: cfg.num_layers,
            dim: inner,
            heads: cfg.num_attention_heads,
            head_dim: cfg.attention_head_dim,
        },
        Stage {
            blocks: "transformer_blocks_2",
            adaln: "adaln_single_2",
            table: "scale_shift_table_2",
            layers: cfg.num_layers_2,
            dim: 2 * inner,
            heads: cfg.num_attention_heads,
            head_dim: 2 * cfg.attention_head_dim,
        },
    ];
    let mut g = GraphBuilder::create(path, "flow_estimator")?;
    let dims = |c: usize| [Dim::from("batch"), Dim::from("frames"), Dim::Fixed(c)];
    let x = g.input(INPUT, DType::F32, &dims(cfg.in_channels));
    let t = g.input(TIMESTEP, DType::F32, &[Dim::from("batch")]);
    let feats = g.with_scope("time", |g| timestep_features(g, &t))?;
    let frames = g.with_scope("frames", |g| {
        let shape = g.shape(&x);
        g.slice(&shape, &[1], &[2], &[0])
    });

    let proj_in = format!("{PREFIX}.proj_in");
    let mut s = g.with_scope("proj_in", |g| project_layer(p, g, &x, &proj_in, cfg.in_channels, inner))?;
    s = run_stage(p, &mut g, &stages[0], s, &feats, &frames)?;
    let cat = g.concat(&[&x, &s], -1);
    let conn = format!("{PREFIX}.connection_proj");
    let mut x2 = g.with_scope("connection_proj", |g| {
        project_layer(p, g, &cat, &conn, cfg.in_channels + inner, 2 * inner)
    })?;
    x2 = run_stage(p, &mut g, &stages[1], x2, &feats, &frames)?;
    let proj_out = format!("{PREFIX}.proj_out");
    let v = g.with_scope("proj_out", |g| {
        project_layer(p, g, &x2, &proj_out, 2 * inner, cfg.out_channels)
    })?;
    g.output(&v, OUTPUT, DType::F32, &dims(cfg.out_channels));
    g.finish()
}

/// Stage blocks then LayerNorm + final modulation with the embedded timestep.
fn run_stage(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    st: &Stage,
    mut x: Value,
    feats: &Value,
    frames: &Value,
) -> Result<Value> {
    let adaln = format!("{PREFIX}.{}", st.adaln);
    let (e, modulation) = g.with_scope(st.adaln, |g| adaln_single(p, g, feats, &adaln, st.dim))?;
    let (cos, sin) = g.with_scope(&format!("{}.rope", st.blocks), |g| {
        rope_tables(p, g, st.head_dim, frames)
    })?;
    for i in 0..st.layers {
        let prefix = format!("{PREFIX}.{}.{i}", st.blocks);
        x = g.with_scope(&format!("{}.{i}", st.blocks), |g| {
            block(p, g, &x, &modulation, &prefix, st, (&cos, &sin))
        })?;
    }
    g.with_scope(&format!("{}.norm_out", st.blocks), |g| {
        let table_name = format!("{PREFIX}.{}", st.table);
        let table = p.f32(&table_name, &[2, st.dim])?;
        let table = p.vector(g, &table_name, &[2, st.dim], &table)?;
        let e3 = g.unsqueeze(&e, &[1]);
        let ss = g.add(&table, &e3);
        let shift = g.slice(&ss, &[0], &[1], &[1]);
        let scale = g.slice(&ss, &[1], &[2], &[1]);
        let normed = ops::layer_norm_plain(p, g, &x, st.dim, NORM_EPS, &format!("{table_name}.ln_unit_scale"))?;
        Ok(modulate(g, &normed, &scale, &shift))
    })
}

/// `x · (1 + scale) + shift`.
fn modulate(g: &mut GraphBuilder, x: &Value, scale: &Value, shift: &Value) -> Value {
    let one = g.scalar_f(1.0, DType::F32);
    let coef = g.add(&one, scale);
    let y = g.mul(x, &coef);
    g.add(&y, shift)
}

/// `[cos(a), sin(a)]` with `a = t · f · 1000`, `f_j = exp(−ln(10⁴)·j/256)` (f32, like torch).
fn timestep_features(g: &mut GraphBuilder, t: &Value) -> Result<Value> {
    let neg_ln = -(4.0 * LN_10) as f32;
    let freqs: Vec<f32> = (0..FREQ_HALF)
        .map(|j| (neg_ln * j as f32 / FREQ_HALF as f32).exp())
        .collect();
    let f = g.init_f32("timestep_freqs", DType::F32, &[1, FREQ_HALF], &freqs)?;
    let t2 = g.unsqueeze(t, &[1]);
    let a = g.mul(&t2, &f);
    let scale = g.scalar_f(TIME_SCALE, DType::F32);
    let a = g.mul(&a, &scale);
    let c = g.cos(&a);
    let s = g.sin(&a);
    Ok(g.concat(&[&c, &s], -1))
}

/// Embedded timestep `e` `[B, D]` and block modulation `linear(silu(e))` as `[B, 6, D]`.
fn adaln_single(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    feats: &Value,
    prefix: &str,
    dim: usize,
) -> Result<(Value, Value)> {
    // Once per call on `[B, D]`: nothing to gain from int8, and the modulation
    // scales every token, so these stay float in every build.
    let p = &p.with_int8_linears(false);
    let emb = format!("{prefix}.emb.timestep_embedder");
    let h = linear(p, g, feats, &format!("{emb}.linear_1"), 2 * FREQ_HALF, dim, true)?;
    let h = g.silu(&h);
    let e = linear(p, g, &h, &format!("{emb}.linear_2"), dim, dim, true)?;
    let se = g.silu(&e);
    let m = linear(p, g, &se, &format!("{prefix}.linear"), dim, 6 * dim, true)?;
    let m = g.reshape(&m, &[0, 6, dim as i64]);
    Ok((e, m))
}

/// RoPE cos/sin `[T, head_dim/2]` for positions `0..T`.
fn rope_tables(p: &Params<'_>, g: &mut GraphBuilder, head_dim: usize, frames: &Value) -> Result<(Value, Value)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|j| 1.0 / ROPE_BASE.powf((2 * j) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(MAX_FRAMES * half);
    let mut sin = Vec::with_capacity(MAX_FRAMES * half);
    for pos in 0..MAX_FRAMES {
        for &f in &inv {
            let a = f64::from(pos as f32 * f);
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let mut table = |name: &str, data: &[f32]| -> Result<Value> {
        let t = p.vector(g, &format!("rope{head_dim}.{name}"), &[MAX_FRAMES, half], data)?;
        let zero = g.const_i64(&[0]);
        let axis = g.const_i64(&[0]);
        Ok(g.node("Slice", &[&t, &zero, frames, &axis], vec![]))
    };
    Ok((table("cos", &cos)?, table("sin", &sin)?))
}

/// Split-halves rotation of `x` `[B, H, T, hd]` (features pre-permuted to `[even…, odd…]`).
fn apply_rope(g: &mut GraphBuilder, x: &Value, half: usize, rope: (&Value, &Value)) -> Value {
    let h = half as i64;
    let x1 = g.slice(x, &[0], &[h], &[-1]);
    let x2 = g.slice(x, &[h], &[2 * h], &[-1]);
    let (a, b) = (g.mul(&x1, rope.0), g.mul(&x2, rope.1));
    let y1 = g.sub(&a, &b);
    let (c, d) = (g.mul(&x2, rope.0), g.mul(&x1, rope.1));
    let y2 = g.add(&c, &d);
    g.concat(&[&y1, &y2], -1)
}

/// One adaLN-single block: attention then SwiGLU MLP, each gated and modulated.
fn block(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    modulation: &Value,
    prefix: &str,
    st: &Stage,
    rope: (&Value, &Value),
) -> Result<Value> {
    let d = st.dim;
    let table_name = format!("{prefix}.scale_shift_table");
    let table = p.f32(&table_name, &[6, d])?;
    let table = p.vector(g, &table_name, &[6, d], &table)?;
    let m = g.add(&table, modulation);
    let row = |g: &mut GraphBuilder, i: i64| g.slice(&m, &[i], &[i + 1], &[1]);
    let (shift_msa, scale_msa, gate_msa) = (row(g, 0), row(g, 1), row(g, 2));
    let (shift_mlp, scale_mlp, gate_mlp) = (row(g, 3), row(g, 4), row(g, 5));

    let h = modulated_rms(
        p,
        g,
        x,
        &format!("{prefix}.attn_norm.weight"),
        d,
        &scale_msa,
        &shift_msa,
    )?;
    let a = g.with_scope("attn", |g| attention(p, g, &h, &format!("{prefix}.attn"), st, rope))?;
    let a = g.mul(&gate_msa, &a);
    let x = g.add(x, &a);

    let h = modulated_rms(
        p,
        g,
        &x,
        &format!("{prefix}.mlp_norm.weight"),
        d,
        &scale_mlp,
        &shift_mlp,
    )?;
    let f = g.with_scope("mlp", |g| swiglu(p, g, &h, &format!("{prefix}.mlp"), d))?;
    let f = g.mul(&gate_mlp, &f);
    Ok(g.add(&x, &f))
}

/// `rmsnorm(x) · weight · (1 + scale) + shift`, the weight folded into the `[B, 1, D]` factor.
fn modulated_rms(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    weight: &str,
    d: usize,
    scale: &Value,
    shift: &Value,
) -> Result<Value> {
    let w = p.ckpt_vector(g, weight, d)?;
    let one = g.scalar_f(1.0, DType::F32);
    let coef = g.add(&one, scale);
    let coef = g.mul(&coef, &w);
    let n = rms_normalize(g, x, NORM_EPS);
    let y = g.mul(&n, &coef);
    Ok(g.add(&y, shift))
}

/// Full bidirectional multi-head attention with RoPE on q and k.
fn attention(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    h: &Value,
    prefix: &str,
    st: &Stage,
    rope: (&Value, &Value),
) -> Result<Value> {
    let (d, heads, hd) = (st.dim, st.heads, st.head_dim);
    let scale = 1.0 / (hd as f64).sqrt();
    let q = p.f32(&format!("{prefix}.q_proj.weight"), &[d, d])?;
    let k = p.f32(&format!("{prefix}.k_proj.weight"), &[d, d])?;
    let v = p.f32(&format!("{prefix}.v_proj.weight"), &[d, d])?;
    // Fused [3D, D] in PyTorch layout: permuted (and scaled) q rows, permuted k rows, v rows.
    let mut fused = Vec::with_capacity(3 * d * d);
    fused.extend(
        permute_rows_for_rope(&q, heads, hd, d)
            .iter()
            .map(|&w| (f64::from(w) * scale) as f32),
    );
    fused.extend(permute_rows_for_rope(&k, heads, hd, d));
    fused.extend_from_slice(&v);
    let qkv = fused_linear(p, g, h, &format!("{prefix}.qkv.weight"), d, &fused)?;
    let qkv = g.reshape(&qkv, &[0, 0, 3, heads as i64, hd as i64]);
    let qkv = g.transpose(&qkv, &[2, 0, 3, 1, 4]);
    let pick = |g: &mut GraphBuilder, i: i64| {
        let idx = g.scalar_i64(i);
        g.gather(&qkv, &idx, 0)
    };
    let (q, k, v) = (pick(g, 0), pick(g, 1), pick(g, 2));
    let q = apply_rope(g, &q, hd / 2, rope);
    let k = apply_rope(g, &k, hd / 2, rope);
    let kt = g.transpose(&k, &[0, 1, 3, 2]);
    let scores = g.matmul(&q, &kt);
    let probs = g.softmax(&scores, -1);
    let o = g.matmul(&probs, &v);
    let o = g.transpose(&o, &[0, 2, 1, 3]);
    let o = g.reshape(&o, &[0, 0, d as i64]);
    linear(p, g, &o, &format!("{prefix}.o_proj"), d, d, false)
}

/// `x · Wᵀ` without bias for a weight built here in PyTorch layout, `rows`
/// `[out, in_dim]` (fused projections).
fn fused_linear(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    name: &str,
    in_dim: usize,
    rows: &[f32],
) -> Result<Value> {
    let out_dim = rows.len() / in_dim;
    let w_t = transpose(rows, out_dim, in_dim);
    let weight = DenseWeight {
        name,
        in_dim,
        out_dim,
        w_t: &w_t,
    };
    p.dense(g, x, &weight, None)
}

/// Reorders the output rows of a `[heads·hd, in]` projection so that within each
/// head the even features come first, then the odd ones.
fn permute_rows_for_rope(w: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w.len());
    for h in 0..heads {
        for r in (0..hd).step_by(2).chain((1..hd).step_by(2)) {
            let row = h * hd + r;
            out.extend_from_slice(&w[row * cols..(row + 1) * cols]);
        }
    }
    out
}

/// `down(silu(gate x) ⊙ up x)` with gate and up fused into one MatMul.
fn swiglu(p: &Params<'_>, g: &mut GraphBuilder, h: &Value, prefix: &str, d: usize) -> Result<Value> {
    let f = CodecConfig::mlp_hidden(d);
    let gate = p.f32(&format!("{prefix}.gate.weight"), &[f, d])?;
    let up = p.f32(&format!("{prefix}.up.weight"), &[f, d])?;
    let fused: Vec<f32> = gate.into_iter().chain(up).collect();
    let gu = fused_linear(p, g, h, &format!("{prefix}.gate_up.weight"), d, &fused)?;
    let fi = f as i64;
    let gate = g.slice(&gu, &[0], &[fi], &[-1]);
    let up = g.slice(&gu, &[fi], &[2 * fi], &[-1]);
    let act = g.silu(&gate);
    let prod = g.mul(&act, &up);
    linear(p, g, &prod, &format!("{prefix}.down"), f, d, false)
}

/// `ProjectLayer`: Conv1d(k = 3, pad 1) · 3^-½ as an im2col MatMul, then Linear.
fn project_layer(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    prefix: &str,
    cin: usize,
    cout: usize,
) -> Result<Value> {
    const K: usize = 3;
    let s = 1.0 / (K as f64).sqrt();
    let w_name = format!("{prefix}.ffn_1.weight");
    let w = p.f32(&w_name, &[cout, cin, K])?;
    // Rows `k·cin + c` of the [K·cin, cout] im2col matrix hold w[o, c, k]·s.
    let mut im2col = vec![0f32; K * cin * cout];
    for o in 0..cout {
        for c in 0..cin {
            for k in 0..K {
                im2col[(k * cin + c) * cout + o] = (f64::from(w[(o * cin + c) * K + k]) * s) as f32;
            }
        }
    }
    let b_name = format!("{prefix}.ffn_1.bias");
    let b: Vec<f32> = p
        .f32(&b_name, &[cout])?
        .iter()
        .map(|&v| (f64::from(v) * s) as f32)
        .collect();
    let b = p.vector(g, &b_name, &[cout], &b)?;
    let pads = g.const_i64(&[0, 1, 0, 0, 1, 0]);
    let xp = g.node("Pad", &[x, &pads], vec![Attr::string("mode", "constant")]);
    let prev = g.slice(&xp, &[0], &[-2], &[1]);
    let cur = g.slice(&xp, &[1], &[-1], &[1]);
    let next = g.slice(&xp, &[2], &[i64::MAX], &[1]);
    let cols = g.concat(&[&prev, &cur, &next], -1);
    let weight = DenseWeight {
        name: &w_name,
        in_dim: K * cin,
        out_dim: cout,
        w_t: &im2col,
    };
    let y = p.dense(g, &cols, &weight, Some(&b))?;
    linear(p, g, &y, &format!("{prefix}.ffn_2"), cout, cout, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_puts_evens_first_per_head() {
        // 2 heads × hd 4, one column: rows 0..8.
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            permute_rows_for_rope(&w, 2, 4, 1),
            vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
    }
}
