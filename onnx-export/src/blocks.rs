//! Building blocks of the torchtune Llama-3.2 decoder stack (spec §2.3–2.4):
//! RMSNorm, linear layers, SwiGLU MLP, grouped-query attention with
//! interleaved-pair Llama-3-scaled RoPE and an externally held KV cache.
//!
//! # Numerics
//! The residual stream, RMSNorm statistics, RoPE and the softmax run in f32 at
//! every precision. [`Numerics::compute`] is the dtype of matmul inputs, of the
//! attention probabilities fed to `P·V` and of the KV cache; [`Numerics::weights`]
//! the dtype dense weights are stored in (f32 or f16); quantized linear layers
//! (FP8, NVFP4) are emitted by [`crate::linears`] and dequantize to `compute`.
//!
//! # Attention and the KV cache
//! ONNX Runtime's `com.microsoft.GroupQueryAttention` would be the natural choice (it
//! updates a shared past/present buffer in place), but ORT 1.31's CPU kernel
//! rejects head sizes that are not a multiple of 8 (16 with rotary: the fixture
//! decoder has head_dim 12) and refuses more than one new position with a past
//! unless batch = 1 (CFG runs batch 2, and speculative decoding needs K+1 new
//! positions). So attention is built from standard ops, with the cache kept
//! outside the graph:
//! - `past_key_i` is `[B, KV, hd, C]` (keys stored transposed, so `q·Kᵀ` is a
//!   plain MatMul with no per-step transpose of the cache) and `past_value_i`
//!   `[B, KV, C, hd]`. `C` is the cache *capacity*: the runtime binds its
//!   preallocated buffers by pointer, nothing is copied.
//! - The graph returns only the new positions, `new_key_i` `[B, KV, hd, S]` and
//!   `new_value_i` `[B, KV, S, hd]` (already rotated); the runtime writes them into
//!   its buffers at the current length (S·hd values per head).
//! - Scores are `[q·Kpastᵀ | q·Knewᵀ]` (`[B, KV, G·S, C+S]`, the G = H/KV query
//!   heads of a kv head stacked as rows), scaled, plus `attn_bias` `[S, C+S]`
//!   (0 = may attend, −inf = masked: unused capacity, future positions), softmax,
//!   then `P_past·Vpast + P_new·Vnew`. Cost is proportional to the capacity, so
//!   the runtime grows the cache in steps instead of allocating the maximum.

use heart::checkpoint::{Checkpoint, TensorRef};
use heart::config::FlavorParams;

pub use crate::dense::{Numerics, cast_if};
use crate::error::{ExportError, Result};
use crate::graph::{Attr, DType, GraphBuilder, Layout, Value};
use crate::linears::{LinearGroup, Linears};

/// What every layer of one decoder stack needs: the checkpoint, the stack's
/// name and hyper-parameters and the graph's numerics.
#[derive(Clone, Copy)]
pub struct Stack<'a> {
    /// The checkpoint weights are streamed from.
    pub ckpt: &'a Checkpoint,
    /// `backbone` or `decoder`: the checkpoint prefix, which picks the
    /// [`LinearGroup`]s of its layers.
    pub name: &'a str,
    /// Hyper-parameters of this stack (backbone or decoder flavor).
    pub params: &'a FlavorParams,
    /// Storage and compute dtypes.
    pub nm: Numerics,
}

/// Per-call values every attention layer of a stack shares.
#[derive(Debug, Clone)]
pub struct AttnContext {
    /// RoPE cosines of the call's positions, each repeated for both members
    /// of its pair, `[S, 1, hd]` f32.
    pub cos: Value,
    /// RoPE sines of the call's positions, negated for a pair's first member,
    /// `[S, 1, hd]` f32 (see [`rope`]).
    pub sin: Value,
    /// `[1, 0, 3, 2, …]` int64 `[hd]`: the index that swaps each pair.
    pub swap: Value,
    /// Additive mask tiled over the query group, `[G·S, C+S]` f32.
    pub bias: Value,
    /// The cache capacity `C` as a 1-element int64 tensor.
    pub capacity: Value,
}

/// Outputs of one attention layer.
#[derive(Debug, Clone)]
pub struct LayerOut {
    /// The layer's output (residual stream), f32.
    pub x: Value,
    /// Rotated keys of the new positions, `[B, KV, hd, S]`.
    pub new_key: Value,
    /// Values of the new positions, `[B, KV, S, hd]`.
    pub new_value: Value,
}

/// Llama-3 scaled RoPE frequencies (torchtune 0.4.0 `Llama3ScaledRoPE`), in f32
/// arithmetic like the reference.
pub fn rope_freqs(p: &FlavorParams) -> Vec<f32> {
    const OLD_CONTEXT: f32 = 8192.0;
    const LOW_FREQ_FACTOR: f32 = 1.0;
    const HIGH_FREQ_FACTOR: f32 = 4.0;
    let hd = p.head_dim();
    let base = p.rope_base as f32;
    let scale = p.scale_factor as f32;
    let low_freq_wavelen = OLD_CONTEXT / LOW_FREQ_FACTOR;
    let high_freq_wavelen = OLD_CONTEXT / HIGH_FREQ_FACTOR;
    (0..hd / 2)
        .map(|j| {
            let freq = 1.0f32 / base.powf((2 * j) as f32 / hd as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_freq_wavelen {
                freq
            } else if wavelen > low_freq_wavelen {
                freq / scale
            } else {
                let smooth = (OLD_CONTEXT / wavelen - LOW_FREQ_FACTOR) / (HIGH_FREQ_FACTOR - LOW_FREQ_FACTOR);
                (1.0 - smooth) * freq / scale + smooth * freq
            }
        })
        .collect()
}

/// RoPE tables `cos[pos, j]`, `sin[pos, j]` for `pos < max_seq_len`, each
/// `[max_seq_len, hd/2]` row-major f32.
pub fn rope_tables(p: &FlavorParams) -> (Vec<f32>, Vec<f32>) {
    let freqs = rope_freqs(p);
    let n = p.max_seq_len * freqs.len();
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for pos in 0..p.max_seq_len {
        for &f in &freqs {
            let angle = pos as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Checks a checkpoint tensor's shape.
pub fn expect_shape<'a>(ckpt: &'a Checkpoint, name: &str, shape: &[usize]) -> Result<TensorRef<'a>> {
    let t = ckpt.tensor(name)?;
    if t.shape != shape {
        return Err(ExportError::Shape {
            tensor: name.to_string(),
            expected: format!("shape {shape:?}"),
            got: format!("shape {:?}", t.shape),
        });
    }
    Ok(t)
}

/// torchtune RMSNorm on f32 input: `x / sqrt(mean(x²) + eps) · scale`, f32 out.
pub fn rms_norm(g: &mut GraphBuilder, x: &Value, scale: &TensorRef<'_>, eps: f64) -> Result<Value> {
    let w = g.weight(scale, DType::F32, Layout::AsIs)?;
    Ok(g.with_scope(scale.name.trim_end_matches(".scale"), |g| {
        let sq = g.mul(x, x);
        let mean = g.reduce_mean(&sq, &[-1], true);
        let e = g.scalar_f(eps as f32, DType::F32);
        let var = g.add(&mean, &e);
        let rms = g.sqrt(&var);
        let normed = g.div(x, &rms);
        g.mul(&normed, &w)
    }))
}

/// SwiGLU MLP `w2(silu(w1 x) ⊙ w3 x)` on compute-dtype input.
pub fn swiglu(g: &mut GraphBuilder, st: Stack<'_>, lin: &mut Linears<'_>, prefix: &str, x: &Value) -> Result<Value> {
    let ckpt = st.ckpt;
    let (d, f) = (st.params.embed_dim, st.params.intermediate_dim);
    let group = LinearGroup::mlp(st.name);
    let w1 = expect_shape(ckpt, &format!("{prefix}.w1.weight"), &[f, d])?;
    let w3 = expect_shape(ckpt, &format!("{prefix}.w3.weight"), &[f, d])?;
    let w2 = expect_shape(ckpt, &format!("{prefix}.w2.weight"), &[d, f])?;
    let gate = lin.linear(g, x, &w1, group, 3)?;
    let up = lin.linear(g, x, &w3, group, 3)?;
    let h = g.with_scope(prefix, |g| {
        let a = g.silu(&gate);
        g.mul(&a, &up)
    });
    lin.linear(g, &h, &w2, group, 3)
}

/// Interleaved-pair rotation of `x` `[B, S, N, hd]` (f32):
/// `(x0, x1) → (x0·cos − x1·sin, x1·cos + x0·sin)` for pairs `(x[2j], x[2j+1])`,
/// computed as `x·cos' + swap(x)·sin'` with the context's pair-expanded tables
/// (`sin'` negative on a pair's first member). Bit for bit the same numbers:
/// `a + (−b)` is `a − b` in IEEE arithmetic and each product is the same; in
/// 4 nodes instead of the 10 of slicing the pairs apart and back, which at
/// the small size was 15 % of a frame graph's nodes.
pub fn rope(g: &mut GraphBuilder, x: &Value, ctx: &AttnContext) -> Value {
    let swapped = g.gather(x, &ctx.swap, -1);
    let a = g.mul(x, &ctx.cos);
    let b = g.mul(&swapped, &ctx.sin);
    g.add(&a, &b)
}

/// The RoPE tables of stack `p` as [`rope`] reads them: initializers
/// `{name}.cos` (each cosine twice) and `{name}.sin` (each sine as `−sin,
/// sin`), each `[max_seq_len, hd]` f32.
pub fn rope_inits(g: &mut GraphBuilder, p: &FlavorParams, name: &str) -> Result<(Value, Value)> {
    let hd = p.head_dim();
    let (cos, sin) = rope_tables(p);
    let cos2: Vec<f32> = cos.iter().flat_map(|&c| [c, c]).collect();
    let sin2: Vec<f32> = sin.iter().flat_map(|&s| [-s, s]).collect();
    let cos_t = g.init_f32(&format!("{name}.cos"), DType::F32, &[p.max_seq_len, hd], &cos2)?;
    let sin_t = g.init_f32(&format!("{name}.sin"), DType::F32, &[p.max_seq_len, hd], &sin2)?;
    Ok((cos_t, sin_t))
}

/// Builds the shared per-call attention inputs from graph inputs `positions`
/// (int64 `[S]`), `attn_bias` (f32 `[S, C+S]`) and the first layer's
/// `past_value` (for the capacity), with the RoPE tables stored in the graph.
pub fn attn_context(
    g: &mut GraphBuilder,
    p: &FlavorParams,
    positions: &Value,
    attn_bias: &Value,
    past_value: &Value,
) -> Result<AttnContext> {
    let tables = rope_inits(g, p, "rope")?;
    Ok(attn_context_with(g, p, &tables, positions, attn_bias, past_value))
}

/// [`attn_context`] over RoPE tables already in the graph ([`rope_inits`]):
/// a graph that runs one stack several times stores its tables once.
pub fn attn_context_with(
    g: &mut GraphBuilder,
    p: &FlavorParams,
    (cos_t, sin_t): &(Value, Value),
    positions: &Value,
    attn_bias: &Value,
    past_value: &Value,
) -> AttnContext {
    let hd = p.head_dim() as i64;
    let groups = (p.num_heads / p.num_kv_heads) as i64;
    g.with_scope("attn_context", |g| {
        let cos_g = g.gather(cos_t, positions, 0);
        let sin_g = g.gather(sin_t, positions, 0);
        let cos = g.reshape(&cos_g, &[-1, 1, hd]);
        let sin = g.reshape(&sin_g, &[-1, 1, hd]);
        let swap = g.const_i64(&(0..hd).map(|i| i ^ 1).collect::<Vec<_>>());
        let reps = g.const_i64(&[groups, 1]);
        let bias = g.node("Tile", &[attn_bias, &reps], vec![]);
        let capacity = g.node("Shape", &[past_value], vec![Attr::int("start", 2), Attr::int("end", 3)]);
        AttnContext {
            cos,
            sin,
            swap,
            bias,
            capacity,
        }
    })
}

/// One pre-norm transformer layer `{prefix}` (e.g. `backbone.layers.3`) on the
/// f32 residual stream `x` `[B, S, D]`, reading the cache `past_key`/`past_value`.
pub fn transformer_layer(
    g: &mut GraphBuilder,
    st: Stack<'_>,
    lin: &mut Linears<'_>,
    prefix: &str,
    x: &Value,
    ctx: &AttnContext,
    past: (&Value, &Value),
) -> Result<LayerOut> {
    let (ckpt, p, nm) = (st.ckpt, st.params, st.nm);
    let d = p.embed_dim;
    let sa = expect_shape(ckpt, &format!("{prefix}.sa_norm.scale"), &[d])?;
    let n = rms_norm(g, x, &sa, p.norm_eps)?;
    let n = cast_if(g, &n, DType::F32, nm.compute);
    let attn = attention(g, st, lin, &format!("{prefix}.attn"), &n, ctx, past)?;
    let attn_out = cast_if(g, &attn.x, nm.compute, DType::F32);
    let h = g.with_scope(prefix, |g| g.add(x, &attn_out));
    let mn = expect_shape(ckpt, &format!("{prefix}.mlp_norm.scale"), &[d])?;
    let n2 = rms_norm(g, &h, &mn, p.norm_eps)?;
    let n2 = cast_if(g, &n2, DType::F32, nm.compute);
    let mlp = swiglu(g, st, lin, &format!("{prefix}.mlp"), &n2)?;
    let mlp = cast_if(g, &mlp, nm.compute, DType::F32);
    let out = g.with_scope(prefix, |g| g.add(&h, &mlp));
    Ok(LayerOut {
        x: out,
        new_key: attn.new_key,
        new_value: attn.new_value,
    })
}

/// Grouped-query attention `{prefix}` (e.g. `backbone.layers.3.attn`) on the
/// normed compute-dtype input; see the module doc for the cache layout.
pub fn attention(
    g: &mut GraphBuilder,
    st: Stack<'_>,
    lin: &mut Linears<'_>,
    prefix: &str,
    x: &Value,
    ctx: &AttnContext,
    (past_key, past_value): (&Value, &Value),
) -> Result<LayerOut> {
    let (ckpt, p, nm) = (st.ckpt, st.params, st.nm);
    let (d, h, kv, hd) = (p.embed_dim, p.num_heads, p.num_kv_heads, p.head_dim());
    let groups = (h / kv) as i64;
    let wq = expect_shape(ckpt, &format!("{prefix}.q_proj.weight"), &[h * hd, d])?;
    let wk = expect_shape(ckpt, &format!("{prefix}.k_proj.weight"), &[kv * hd, d])?;
    let wv = expect_shape(ckpt, &format!("{prefix}.v_proj.weight"), &[kv * hd, d])?;
    let wo = expect_shape(ckpt, &format!("{prefix}.output_proj.weight"), &[d, h * hd])?;
    let group = LinearGroup::attention(st.name);
    let q = lin.linear(g, x, &wq, group, 3)?;
    let k = lin.linear(g, x, &wk, group, 3)?;
    let v = lin.linear(g, x, &wv, group, 3)?;
    let (hd_i, kv_i) = (hd as i64, kv as i64);
    let out = g.with_scope(prefix, |g| {
        // Rotate in f32 (the reference upcasts for RoPE), then back to compute.
        let q4 = g.reshape(&q, &[0, 0, h as i64, hd_i]);
        let q4 = cast_if(g, &q4, nm.compute, DType::F32);
        let q4 = rope(g, &q4, ctx);
        let q4 = cast_if(g, &q4, DType::F32, nm.compute);
        let k4 = g.reshape(&k, &[0, 0, kv_i, hd_i]);
        let k4 = cast_if(g, &k4, nm.compute, DType::F32);
        let k4 = rope(g, &k4, ctx);
        let k4 = cast_if(g, &k4, DType::F32, nm.compute);
        // q: [B,S,KV,G,hd] -> [B,KV,G,S,hd] -> [B,KV,G*S,hd]
        let q5 = g.reshape(&q4, &[0, 0, kv_i, groups, hd_i]);
        let q5 = g.transpose(&q5, &[0, 2, 3, 1, 4]);
        let qg = g.reshape(&q5, &[0, 0, -1, hd_i]);
        let new_key = g.transpose(&k4, &[0, 2, 3, 1]);
        let v4 = g.reshape(&v, &[0, 0, kv_i, hd_i]);
        let new_value = g.transpose(&v4, &[0, 2, 1, 3]);

        let s_past = g.matmul(&qg, past_key);
        let s_new = g.matmul(&qg, &new_key);
        let scores = g.concat(&[&s_past, &s_new], -1);
        let scores = cast_if(g, &scores, nm.compute, DType::F32);
        let scale = g.scalar_f(1.0 / (hd as f32).sqrt(), DType::F32);
        let scores = g.mul(&scores, &scale);
        let scores = g.add(&scores, &ctx.bias);
        let probs = g.softmax(&scores, -1);
        let probs = cast_if(g, &probs, DType::F32, nm.compute);
        let zero = g.const_i64(&[0]);
        let end = g.const_i64(&[i64::MAX]);
        let last = g.const_i64(&[-1]);
        let p_past = g.node("Slice", &[&probs, &zero, &ctx.capacity, &last], vec![]);
        let p_new = g.node("Slice", &[&probs, &ctx.capacity, &end, &last], vec![]);
        let o_past = g.matmul(&p_past, past_value);
        let o_new = g.matmul(&p_new, &new_value);
        let o = g.add(&o_past, &o_new);
        // [B,KV,G*S,hd] -> [B,KV,G,S,hd] -> [B,S,KV,G,hd] -> [B,S,H*hd]
        let o5 = g.reshape(&o, &[0, 0, groups, -1, hd_i]);
        let o5 = g.transpose(&o5, &[0, 3, 1, 2, 4]);
        let o3 = g.reshape(&o5, &[0, 0, -1]);
        (o3, new_key, new_value)
    });
    let x = lin.linear(g, &out.0, &wo, group, 3)?;
    Ok(LayerOut {
        x,
        new_key: out.1,
        new_value: out.2,
    })
}
