//! `heart-build synth --realistic`: random weights with the statistics that
//! make quantization hard on trained LLMs, which plain random weights lack.
//!
//! - **Outlier features.** Two fixed channels per stack (chosen by the seed,
//!   the same in every layer, as trained LLMs' outlier dimensions are) get
//!   RMSNorm gains [`OUTLIER_GAINS`] (10 and 30; the other channels
//!   `1 ± 0.1`), so every quantized linear input of the layer stacks carries
//!   two channels 10–30× the rest.
//! - **Attention-sink token.** The text embedding of the BOS token (every
//!   prompt's first position) is [`SINK`] (50) on the backbone's outlier
//!   channels: one position per prompt with massive residual activations,
//!   whose normed rows have a far larger amax than any other token's (the case
//!   where `max`, `percentile` and `mse` calibration disagree).
//! - **Heavy tails.** Every other weight is Student-t with
//!   [`DEGREES_OF_FREEDOM`] degrees of freedom (kurtosis 9 against the
//!   uniform's 1.8), scaled to the variance `1/fan_in` of the plain mode.
//! - **Per-layer scale spread.** Each layer's linear weights are multiplied by
//!   `2^U(−1, 1)` (one factor per layer, by the seed): layers differ 4× in
//!   scale, so one calibration choice cannot fit every layer.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StudentT};

use crate::seeded::rng_for;

/// RMSNorm gains of the two outlier channels of each stack.
pub const OUTLIER_GAINS: [f32; 2] = [10.0, 30.0];
/// The BOS embedding's value on the backbone's outlier channels (other
/// embedding entries are O(1)).
pub const SINK: f32 = 50.0;
/// Student-t degrees of freedom of the weights.
pub const DEGREES_OF_FREEDOM: f32 = 4.0;

/// The two outlier channels of a stack of width `width`.
fn outlier_channels(seed: u64, stack: &str, width: usize) -> [usize; 2] {
    let mut rng = rng_for(seed, &format!("realistic.outliers.{stack}"), 0);
    let a = rng.random_range(0..width);
    let b = (a + 1 + rng.random_range(0..width - 1)) % width;
    [a, b]
}

/// The stack (`backbone`/`decoder`) and layer prefix (`backbone.layers.3`) of a tensor name.
fn layer_of(name: &str) -> Option<(&str, &str)> {
    let stack = name.split('.').next()?;
    let rest = name.strip_prefix(stack)?.strip_prefix(".layers.")?;
    let index = rest.split('.').next()?;
    Some((stack, &name[..stack.len() + ".layers.".len() + index.len()]))
}

/// Fills the RMSNorm gains `name` (a `.scale` vector): layer norms get the
/// outlier gains, final norms stay 1.
pub fn norm_gains(seed: u64, name: &str, buf: &mut [f32]) {
    let Some((stack, _)) = layer_of(name) else {
        buf.fill(1.0);
        return;
    };
    let mut rng = rng_for(seed, name, 0);
    for v in buf.iter_mut() {
        *v = 1.0 + (rng.random::<f32>() * 2.0 - 1.0) * 0.1;
    }
    for (c, g) in outlier_channels(seed, stack, buf.len()).into_iter().zip(OUTLIER_GAINS) {
        buf[c] = g;
    }
}

/// Where a chunk of weights goes.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// Seed of the checkpoint.
    pub seed: u64,
    /// Tensor name.
    pub name: &'a str,
    /// Tensor shape.
    pub shape: &'a [usize],
    /// Index of the chunk's first element in the tensor.
    pub start: usize,
    /// Fan-in the plain mode scales by.
    pub fan_in: usize,
    /// The BOS (sink) token id.
    pub bos: usize,
}

/// Fills `buf` (the chunk `c` of a weight) with heavy-tailed values of
/// variance `1/fan_in` times its layer's scale, and writes the sink token's
/// row of the text embedding.
pub fn weights(rng: &mut ChaCha8Rng, c: Chunk<'_>, buf: &mut [f32]) {
    let Chunk {
        seed,
        name,
        shape,
        start,
        fan_in,
        bos,
    } = c;
    let t = StudentT::new(DEGREES_OF_FREEDOM).expect("positive degrees of freedom");
    // Var(t_ν) = ν / (ν − 2).
    let std = (DEGREES_OF_FREEDOM / (DEGREES_OF_FREEDOM - 2.0)).sqrt();
    let layer = layer_of(name).map_or(1.0, |(_, prefix)| {
        let mut r = rng_for(seed, &format!("realistic.scale.{prefix}"), 0);
        2f32.powf(r.random::<f32>() * 2.0 - 1.0)
    });
    let scale = layer / (std * (fan_in as f32).sqrt());
    for v in buf.iter_mut() {
        *v = t.sample(rng) * scale;
    }
    if name == "text_embeddings.weight" {
        let width = shape[1];
        let channels = outlier_channels(seed, "backbone", width);
        for (i, v) in buf.iter_mut().enumerate() {
            let (row, col) = ((start + i) / width, (start + i) % width);
            if row == bos && channels.contains(&col) {
                *v = SINK;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_prefixes_and_outlier_channels() {
        assert_eq!(
            layer_of("backbone.layers.12.mlp.w1.weight"),
            Some(("backbone", "backbone.layers.12"))
        );
        assert_eq!(layer_of("backbone.norm.scale"), None);
        assert_eq!(layer_of("projection.weight"), None);
        for seed in 0..50 {
            let [a, b] = outlier_channels(seed, "decoder", 48);
            assert!(a != b && a < 48 && b < 48);
        }
        let mut gains = vec![0f32; 64];
        norm_gains(3, "backbone.layers.0.sa_norm.scale", &mut gains);
        let big: Vec<f32> = gains.iter().copied().filter(|&g| g > 2.0).collect();
        assert_eq!(big.len(), 2);
        assert!(
            gains
                .iter()
                .all(|&g| (0.9..=1.1).contains(&g) || OUTLIER_GAINS.contains(&g))
        );
    }

    #[test]
    fn weights_are_heavy_tailed_with_the_plain_variance() {
        let mut rng = rng_for(1, "w", 0);
        let mut buf = vec![0f32; 200_000];
        let chunk = Chunk {
            seed: 1,
            name: "projection.weight",
            shape: &[400, 500],
            start: 0,
            fan_in: 500,
            bos: 320,
        };
        weights(&mut rng, chunk, &mut buf);
        let n = buf.len() as f64;
        let var = buf.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n;
        let kurt = buf.iter().map(|&x| f64::from(x).powi(4)).sum::<f64>() / n / var.powi(2);
        assert!((var * 500.0 - 1.0).abs() < 0.1, "variance {var} × fan_in");
        assert!(kurt > 5.0, "kurtosis {kurt}: Student-t(4) tails (uniform: 1.8)");
    }
}
