//! Euler solver with classifier-free guidance for one window (spec §4.5).
//!
//! Per step: the in-context frames of the state are re-interpolated between the
//! initial noise and the given context, the estimator runs ONCE on a batch of two
//! rows `[uncond, cond]` (guidance > 1; `mu` zeroed in the unconditional row) or on
//! one conditional row, the guided velocity `v_u + g·(v_c − v_u)` is applied with
//! upstream's f32-accumulated step sizes ([`euler_steps`]). After the last step the
//! in-context frames are overwritten with the context exactly.

use ndarray::ArrayView2;

use super::error::{CodecError, Result};
use super::geometry::{SIGMA_MIN, euler_steps};
use super::sessions::FlowEstimator;

/// Anything that maps `[B, T, in_channels]` + `[B]` times to `[B, T, latent]`.
pub trait VelocityField {
    /// Velocity for `input` `[B, frames, in_channels]` at one time per batch row.
    fn velocity(&mut self, input: &[f32], frames: usize, timesteps: &[f32]) -> Result<Vec<f32>>;
}

impl VelocityField for FlowEstimator {
    fn velocity(&mut self, input: &[f32], frames: usize, timesteps: &[f32]) -> Result<Vec<f32>> {
        FlowEstimator::velocity(self, input, frames, timesteps)
    }
}

/// Solver settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowParams {
    /// Euler steps (upstream default 10).
    pub num_steps: usize,
    /// CFG scale; guidance (and the batch-2 call) only when `> 1` (default 1.25).
    pub guidance: f32,
}

impl Default for FlowParams {
    fn default() -> Self {
        Self {
            num_steps: 10,
            guidance: 1.25,
        }
    }
}

/// Inputs of one window solve. All buffers are row-major `[frames, channels]`.
#[derive(Debug, Clone, Copy)]
pub struct WindowInputs<'a> {
    /// Conditioning `[frames, dim]`.
    pub mu: ArrayView2<'a, f32>,
    /// In-context latents `[context_frames, latent]` placed at frames
    /// `0..context_frames` (empty for the first window).
    pub context: &'a [f32],
    /// Initial state `x₀` `[frames, latent]`.
    pub noise: &'a [f32],
}

/// Runs the Euler solver; returns the final latents `[frames, latent]`.
pub fn solve_window(
    field: &mut impl VelocityField,
    latent: usize,
    inputs: WindowInputs<'_>,
    params: FlowParams,
) -> Result<Vec<f32>> {
    let (frames, dim) = inputs.mu.dim();
    let n = frames * latent;
    if inputs.noise.len() != n {
        return Err(CodecError::InputLength {
            what: "window noise",
            expected: n,
            got: inputs.noise.len(),
        });
    }
    if !inputs.context.len().is_multiple_of(latent) || inputs.context.len() > n {
        return Err(CodecError::InputLength {
            what: "in-context latents",
            expected: latent * (inputs.context.len() / latent).min(frames),
            got: inputs.context.len(),
        });
    }
    let ctx_len = inputs.context.len();
    let guided = params.guidance > 1.0;
    let rows = if guided { 2 } else { 1 };
    let width = 2 * latent + dim;
    let mut batch = build_batch(&inputs, latent, rows);
    let mut x = inputs.noise.to_vec();
    for (t, dt) in euler_steps(params.num_steps) {
        // Re-interpolate the context frames: (1 − (1 − σ)·t)·x₀ + t·context.
        let keep = 1.0 - (1.0 - SIGMA_MIN) * t;
        for ((xi, &x0), &c) in x[..ctx_len].iter_mut().zip(inputs.noise).zip(inputs.context) {
            *xi = keep * x0 + t * c;
        }
        for r in 0..rows {
            for f in 0..frames {
                let at = (r * frames + f) * width;
                batch[at..at + latent].copy_from_slice(&x[f * latent..(f + 1) * latent]);
            }
        }
        let v = field.velocity(&batch, frames, &vec![t; rows])?;
        if guided {
            let (vu, vc) = v.split_at(n);
            for ((xi, &u), &c) in x.iter_mut().zip(vu).zip(vc) {
                *xi += dt * (u + params.guidance * (c - u));
            }
        } else {
            for (xi, &vi) in x.iter_mut().zip(&v) {
                *xi += dt * vi;
            }
        }
    }
    x[..ctx_len].copy_from_slice(inputs.context);
    Ok(x)
}

/// The estimator input rows without the state: `[_, context, 0]` (unconditional,
/// only when `rows == 2`) then `[_, context, mu]`.
fn build_batch(inputs: &WindowInputs<'_>, latent: usize, rows: usize) -> Vec<f32> {
    let (frames, dim) = inputs.mu.dim();
    let width = 2 * latent + dim;
    let mut batch = vec![0f32; rows * frames * width];
    let ctx_frames = inputs.context.len() / latent;
    for r in 0..rows {
        let conditional = r + 1 == rows;
        for f in 0..frames {
            let row = &mut batch[(r * frames + f) * width..(r * frames + f + 1) * width];
            if f < ctx_frames {
                row[latent..2 * latent].copy_from_slice(&inputs.context[f * latent..(f + 1) * latent]);
            }
            if conditional {
                row[2 * latent..]
                    .iter_mut()
                    .zip(inputs.mu.row(f))
                    .for_each(|(d, &m)| *d = m);
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;

    /// Velocity = `mu` channel 0 (cond row) or −1 (uncond row), and records calls.
    struct Probe {
        latent: usize,
        calls: Vec<(usize, Vec<f32>)>,
        inputs: Vec<Vec<f32>>,
    }

    impl VelocityField for Probe {
        fn velocity(&mut self, input: &[f32], frames: usize, timesteps: &[f32]) -> Result<Vec<f32>> {
            let rows = timesteps.len();
            let width = input.len() / (rows * frames);
            self.calls.push((rows, timesteps.to_vec()));
            self.inputs.push(input.to_vec());
            let mut v = vec![0f32; rows * frames * self.latent];
            for r in 0..rows {
                for f in 0..frames {
                    let m = input[(r * frames + f) * width + 2 * self.latent];
                    let val = if rows == 2 && r == 0 { -1.0 } else { m };
                    v[(r * frames + f) * self.latent..(r * frames + f + 1) * self.latent].fill(val);
                }
            }
            Ok(v)
        }
    }

    fn probe() -> Probe {
        Probe {
            latent: 2,
            calls: vec![],
            inputs: vec![],
        }
    }

    #[test]
    fn guided_solve_batches_uncond_first_and_mixes() {
        let mu = Array2::from_elem((3, 1), 2.0f32);
        let noise = vec![0.5f32; 6];
        let mut p = probe();
        let inputs = WindowInputs {
            mu: mu.view(),
            context: &[],
            noise: &noise,
        };
        let x = solve_window(&mut p, 2, inputs, FlowParams::default()).unwrap();
        assert_eq!(p.calls.len(), 10);
        assert!(p.calls.iter().all(|(rows, _)| *rows == 2));
        assert_eq!(p.calls[3].1, vec![0.3f32, 0.3]);
        // v = −1 + 1.25·(2 − (−1)) = 2.75 over a total time of 1.
        assert!(x.iter().all(|&v| (v - 3.25).abs() < 1e-5), "{x:?}");
        // Unconditional row sees mu = 0, conditional row sees mu.
        let first = &p.inputs[0];
        assert_eq!((first[4], first[3 * 5 + 4]), (0.0, 2.0));
    }

    #[test]
    fn unguided_solve_uses_one_conditional_row() {
        let mu = Array2::from_elem((3, 1), 2.0f32);
        let noise = vec![0.0f32; 6];
        let mut p = probe();
        let params = FlowParams {
            num_steps: 4,
            guidance: 1.0,
        };
        let inputs = WindowInputs {
            mu: mu.view(),
            context: &[],
            noise: &noise,
        };
        let x = solve_window(&mut p, 2, inputs, params).unwrap();
        assert_eq!(p.calls.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 1, 1, 1]);
        assert!(x.iter().all(|&v| (v - 2.0).abs() < 1e-6));
    }

    #[test]
    fn context_frames_are_interpolated_then_restored() {
        let mu = Array2::from_elem((3, 1), 0.0f32);
        let noise = vec![1.0f32; 6];
        let context = [7.0f32, 8.0];
        let mut p = probe();
        let inputs = WindowInputs {
            mu: mu.view(),
            context: &context,
            noise: &noise,
        };
        let x = solve_window(&mut p, 2, inputs, FlowParams::default()).unwrap();
        assert_eq!(&x[..2], &context);
        // Step 5 (t = 0.5): state of frame 0 = (1 − 0.999999·0.5)·1 + 0.5·7, the
        // context channels carry the context in both rows, later frames zeros.
        let step5 = &p.inputs[5];
        let expected = (1.0 - 0.999_999f32 * 0.5) + 0.5 * 7.0;
        assert!((step5[0] - expected).abs() < 1e-6);
        assert_eq!((step5[2], step5[3], step5[5 + 2]), (7.0, 8.0, 0.0));
        assert_eq!(step5[3 * 5 + 2], 7.0);
    }

    #[test]
    fn wrong_noise_length_is_an_error() {
        let mu = Array2::from_elem((3, 1), 0.0f32);
        let inputs = WindowInputs {
            mu: mu.view(),
            context: &[],
            noise: &[0.0; 5],
        };
        let err = solve_window(&mut probe(), 2, inputs, FlowParams::default()).unwrap_err();
        assert!(
            err.to_string().contains("window noise: expected 6 values, got 5"),
            "{err}"
        );
    }
}
