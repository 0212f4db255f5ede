//! `scalar_decoder.onnx`: the ScalarModel decoder (spec §4.7), latents → waveform.
//!
//! I/O: `latents` f32 `[N, latent_hidden_dim, T]` (N = 2: the two audio channels
//! as a batch) → `audio` f32 `[N, 1, T · samples_per_latent]`.
//!
//! Layers (`scalar_model.decoder.{j}`): `round(9x)/9` (ONNX `Round` is
//! half-to-even like torch) → `0` weight-normed Conv1d, symmetric padding → `1..=n`
//! up blocks: weight-normed ConvTranspose1d (k = 2s, stride s) with the last `s`
//! samples dropped, then 5 residual units (dilations 1, 3, 5, 7, 9; causal left
//! padding `d·(k − 1)`; PReLU; k = 1 conv; PReLU; residual add) → `n+1`
//! PostProcessor: each step repeated `num_samples` times, plain causal Conv1d,
//! PReLU → `n+2` weight-normed causal Conv1d to one channel. Weight norm is folded
//! at build time ([`fold_weight_norm`]). Channel widths are read from the
//! checkpoint shapes and checked against `init_channel · 2^(n − i)`.

use std::path::Path;

use heart::config::CodecConfig;

use super::ops::{Params, conv_transpose1d, conv1d, fold_weight_norm, prelu};
use crate::error::{ExportError, Result};
use crate::external::WrittenFile;
use crate::graph::{DType, Dim, GraphBuilder, Value};

pub use heart::engine::codec_io::{DECODER_INPUT as INPUT, DECODER_OUTPUT as OUTPUT};
/// Quantisation levels per unit of the latent (`round(9x)/9`).
const LEVELS: f32 = 9.0;
/// Dilations of the five residual units of every up block.
const DILATIONS: [usize; 5] = [1, 3, 5, 7, 9];
const PREFIX: &str = "scalar_model.decoder";

/// Writes `scalar_decoder.onnx` (+ data) to `path`.
pub fn build(p: &Params<'_>, cfg: &CodecConfig, path: &Path) -> Result<Vec<WrittenFile>> {
    let n_up = cfg.upsample_factors.len();
    let width = |i: usize| cfg.init_channel << (n_up - i);
    let mut g = GraphBuilder::create(path, "scalar_decoder")?;
    let x = g.input(
        INPUT,
        DType::F32,
        &[Dim::from("n"), Dim::Fixed(cfg.latent_hidden_dim), Dim::from("frames")],
    );
    let levels = g.scalar_f(LEVELS, DType::F32);
    let scaled = g.mul(&x, &levels);
    let rounded = g.node("Round", &[&scaled], vec![]);
    let mut h = g.div(&rounded, &levels);

    let k0 = cfg.delay_kernel_size;
    h = g.with_scope("0", |g| {
        let (w, b) = wn_conv(
            p,
            g,
            &format!("{PREFIX}.0"),
            &[width(0), cfg.latent_hidden_dim, k0],
            false,
        )?;
        Ok::<_, ExportError>(conv1d(g, &h, &w, &b, 1, ((k0 - 1) / 2, (k0 - 1) / 2)))
    })?;
    for (i, (&s, &k)) in cfg.upsample_factors.iter().zip(&cfg.upsample_kernel_sizes).enumerate() {
        let (cin, cout) = (width(i), width(i + 1));
        let prefix = format!("{PREFIX}.{}", i + 1);
        h = g.with_scope(&(i + 1).to_string(), |g| {
            up_block(p, g, &h, &prefix, (cin, cout), (s, k), cfg.res_kernel_size)
        })?;
    }
    let post = format!("{PREFIX}.{}", n_up + 1);
    h = g.with_scope(&(n_up + 1).to_string(), |g| {
        post_process(p, g, &h, &post, width(n_up), cfg)
    })?;
    let last = format!("{PREFIX}.{}", n_up + 2);
    let kd = cfg.default_kernel_size;
    let y = g.with_scope(&(n_up + 2).to_string(), |g| {
        let (w, b) = wn_conv(p, g, &last, &[1, width(n_up), kd], false)?;
        Ok::<_, ExportError>(conv1d(g, &h, &w, &b, 1, (kd - 1, 0)))
    })?;
    g.output(
        &y,
        OUTPUT,
        DType::F32,
        &[Dim::from("n"), Dim::Fixed(1), Dim::from("samples")],
    );
    g.finish()
}

/// Folded weight `[dims]` and bias of weight-normed conv `prefix` (`<prefix>.parametrizations.weight.original{0,1}`).
/// `transposed`: a ConvTranspose1d (`dims = [in, out, k]`, bias of length `out`).
fn wn_conv(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    prefix: &str,
    dims: &[usize; 3],
    transposed: bool,
) -> Result<(Value, Value)> {
    let gain = p.f32(&format!("{prefix}.parametrizations.weight.original0"), &[dims[0], 1, 1])?;
    let name = format!("{prefix}.parametrizations.weight.original1");
    let v = p.f32(&name, dims)?;
    let w = p.matrix(g, &format!("{prefix}.weight"), dims, &fold_weight_norm(&gain, &v))?;
    let bias_len = if transposed { dims[1] } else { dims[0] };
    let b = p.ckpt_vector(g, &format!("{prefix}.bias"), bias_len)?;
    Ok((w, b))
}

/// ConvTranspose up-sampling (last `s` samples dropped) and five residual units.
fn up_block(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    prefix: &str,
    (cin, cout): (usize, usize),
    (stride, kernel): (usize, usize),
    res_kernel: usize,
) -> Result<Value> {
    if kernel != 2 * stride {
        return Err(ExportError::Unsupported {
            what: format!("{prefix}: upsample kernel {kernel} is not 2 × stride {stride}"),
        });
    }
    let (w, b) = wn_conv(p, g, &format!("{prefix}.up_conv.layer"), &[cin, cout, kernel], true)?;
    let y = conv_transpose1d(g, x, &w, &b, stride);
    let mut h = g.slice(&y, &[0], &[-(stride as i64)], &[2]);
    for (u, &d) in DILATIONS.iter().enumerate() {
        let unit = format!("{prefix}.convs.{u}");
        h = g.with_scope(&format!("convs.{u}"), |g| {
            residual_unit(p, g, &h, &unit, cout, d, res_kernel)
        })?;
    }
    Ok(h)
}

/// `x + prelu2(conv2(prelu1(conv1_dilated(x))))`, both convs causal.
fn residual_unit(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    prefix: &str,
    c: usize,
    dilation: usize,
    k: usize,
) -> Result<Value> {
    let (w1, b1) = wn_conv(p, g, &format!("{prefix}.conv1"), &[c, c, k], false)?;
    let a1 = p.ckpt_vector(g, &format!("{prefix}.activation1.weight"), 1)?;
    let (w2, b2) = wn_conv(p, g, &format!("{prefix}.conv2"), &[c, c, 1], false)?;
    let a2 = p.ckpt_vector(g, &format!("{prefix}.activation2.weight"), 1)?;
    let y = conv1d(g, x, &w1, &b1, dilation, (dilation * (k - 1), 0));
    let y = prelu(g, &y, &a1);
    let y = conv1d(g, &y, &w2, &b2, 1, (0, 0));
    let y = prelu(g, &y, &a2);
    Ok(g.add(x, &y))
}

/// PostProcessor: repeat every step `num_samples` times, plain causal conv, PReLU.
fn post_process(
    p: &Params<'_>,
    g: &mut GraphBuilder,
    x: &Value,
    prefix: &str,
    c: usize,
    cfg: &CodecConfig,
) -> Result<Value> {
    let k = cfg.default_kernel_size;
    let w_name = format!("{prefix}.conv.weight");
    let w = p.f32(&w_name, &[c, c, k])?;
    let w = p.matrix(g, &w_name, &[c, c, k], &w)?;
    let b = p.ckpt_vector(g, &format!("{prefix}.conv.bias"), c)?;
    let a = p.ckpt_vector(g, &format!("{prefix}.activation.weight"), 1)?;
    let x4 = g.unsqueeze(x, &[3]);
    let reps = g.const_i64(&[1, 1, 1, cfg.num_samples as i64]);
    let tiled = g.node("Tile", &[&x4, &reps], vec![]);
    let repeated = g.reshape(&tiled, &[0, 0, -1]);
    let y = conv1d(g, &repeated, &w, &b, 1, (k - 1, 0));
    Ok(prelu(g, &y, &a))
}
