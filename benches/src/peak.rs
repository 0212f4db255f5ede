//! Peak f32 arithmetic throughput of the machine, measured with an FMA loop.
//!
//! Compute-bound stages (the codec) are compared with a FLOP floor, which needs
//! a peak FLOP/s figure. This kernel keeps `ACCUMULATORS` independent vectors
//! of fused multiply–adds in registers (enough to cover the FMA latency × ports
//! of current cores), so it runs at the core's vector FMA throughput with no
//! memory traffic. Each thread runs it; the figure is the whole machine's.
//!
//! The widest instruction set the CPU reports is used (AVX-512F, else AVX2+FMA
//! on x86-64; the compiler's baseline elsewhere), selected at run time, which
//! is also what ONNX Runtime's MLAS kernels do. A real GEMM reaches only a
//! fraction of this peak, so the FLOP floor is optimistic, as a floor should be.

use std::hint::black_box;

use serde::{Deserialize, Serialize};

use super::BenchError;
use super::stream::best_seconds;

/// Independent accumulator vectors per thread.
const ACCUMULATORS: usize = 12;

/// Measured peak throughput.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeakFlops {
    /// Billions of f32 FLOPs per second (an FMA counts 2), all threads together.
    pub gflop_s: f64,
    /// Instruction set the kernel ran with (`avx512f`, `avx2+fma` or `baseline`).
    pub isa: String,
    /// Threads used.
    pub threads: usize,
}

/// Runs the FMA kernel for `iterations` rounds on each of `threads` threads,
/// `repeats` times, and reports the fastest repeat.
pub fn measure(threads: usize, iterations: usize, repeats: usize) -> Result<PeakFlops, BenchError> {
    if threads == 0 || iterations == 0 || repeats == 0 {
        return Err(BenchError::Plan(format!(
            "peak FLOP/s needs threads, iterations and repeats > 0 (got {threads}, {iterations}, {repeats})"
        )));
    }
    let (isa, lanes, kernel) = select_kernel();
    let seeds: Vec<f32> = (0..threads).map(|t| t as f32 * 1e-3).collect();
    let best = best_seconds(seeds, repeats, |&mut seed| {
        black_box(kernel(black_box(iterations), black_box(seed)));
    });
    let flops = 2.0 * (threads * iterations * ACCUMULATORS * lanes) as f64;
    Ok(PeakFlops {
        gflop_s: flops / best / 1e9,
        isa: isa.to_string(),
        threads,
    })
}

/// Kernel signature: rounds, seed → a value that depends on every lane.
type Kernel = fn(usize, f32) -> f32;

/// `ACCUMULATORS × LANES` lanes of `x ← x·a + b`; with `FUSED` as one FMA.
#[inline(always)]
fn fma_rounds<const LANES: usize, const FUSED: bool>(iterations: usize, seed: f32) -> f32 {
    let (a, b) = (black_box(0.999_999f32), black_box(1e-7f32));
    // One flat array (not rows of lanes): LLVM then keeps it in vector
    // registers instead of gathering and scattering through the stack.
    let mut acc = [[seed; LANES]; ACCUMULATORS];
    let flat = acc.as_flattened_mut();
    for _ in 0..iterations {
        for x in flat.iter_mut() {
            *x = if FUSED { x.mul_add(a, b) } else { *x * a + b };
        }
    }
    flat.iter().sum()
}

fn baseline(iterations: usize, seed: f32) -> f32 {
    fma_rounds::<4, false>(iterations, seed)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn avx512(iterations: usize, seed: f32) -> f32 {
    fma_rounds::<16, true>(iterations, seed)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2(iterations: usize, seed: f32) -> f32 {
    fma_rounds::<8, true>(iterations, seed)
}

/// The widest kernel this CPU runs: (name, f32 lanes per vector, kernel).
fn select_kernel() -> (&'static str, usize, Kernel) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return ("avx512f", 16, |n, s| unsafe { avx512(n, s) });
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return ("avx2+fma", 8, |n, s| unsafe { avx2(n, s) });
        }
    }
    ("baseline", 4, baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_compute_the_same_recurrence() {
        // x ← 0.999999·x + 1e-7 from 0 for 3 rounds, summed over all lanes.
        let one_lane = (0..3).fold(0.0f32, |x, _| x * 0.999_999 + 1e-7);
        let (_, lanes, kernel) = select_kernel();
        let total = kernel(3, 0.0);
        let expected = one_lane * (ACCUMULATORS * lanes) as f32;
        assert!((total - expected).abs() <= expected * 1e-5, "{total} vs {expected}");
        assert!((baseline(3, 0.0) - one_lane * (ACCUMULATORS * 4) as f32).abs() <= expected * 1e-5);
    }

    #[test]
    fn refuses_empty_plans() {
        let err = measure(0, 10, 1).unwrap_err().to_string();
        assert!(err.contains("got 0, 10, 1"), "{err}");
    }
}
