//! A STREAM-like measurement of the machine's memory bandwidth, run by the
//! bench itself so the roofline uses a figure from the same machine and moment.
//!
//! Three `f64` arrays share `total_bytes` (default 512 MiB, far larger than any
//! last-level cache) and are split into one contiguous chunk per thread; each
//! thread first touches its own chunks (so pages land on its memory node).
//! Kernels, each repeated; all threads start a repeat together and time
//! themselves, a repeat lasts from the earliest start to the latest end, and
//! the best repeat is kept (as STREAM does):
//!
//! | kernel | work | bytes counted per element |
//! |---|---|---|
//! | read  | `s += a[i]` (8 independent partial sums) | 8 |
//! | copy  | `c[i] = a[i]` | 16 |
//! | triad | `a[i] = b[i] + q · c[i]` | 24 |
//!
//! Writes are counted once (no write-allocate traffic), like STREAM. The
//! read figure is the one that bounds inference, which streams weights.
//! Results go through [`std::hint::black_box`] so nothing is optimised away.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::BenchError;

/// What to measure with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Bytes of the three arrays together.
    pub total_bytes: usize,
    /// Worker threads (one contiguous chunk of every array each).
    pub threads: usize,
    /// Timed repeats per kernel; the fastest is reported.
    pub repeats: usize,
}

impl StreamConfig {
    /// Default array size: 512 MiB in total.
    pub const DEFAULT_TOTAL_BYTES: usize = 512 << 20;
    /// Default repeats per kernel.
    pub const DEFAULT_REPEATS: usize = 10;
}

impl Default for StreamConfig {
    /// 512 MiB, one thread per available core, 10 repeats.
    fn default() -> Self {
        Self {
            total_bytes: Self::DEFAULT_TOTAL_BYTES,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            repeats: Self::DEFAULT_REPEATS,
        }
    }
}

/// Measured bandwidths, decimal GB/s (10⁹ bytes per second).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StreamResult {
    /// Read-only (sum) bandwidth: the figure the roofline uses.
    pub read_gb_s: f64,
    /// Copy bandwidth.
    pub copy_gb_s: f64,
    /// Triad bandwidth.
    pub triad_gb_s: f64,
    /// Bytes of each of the three arrays.
    pub array_bytes: u64,
    /// Threads used.
    pub threads: usize,
    /// Repeats per kernel.
    pub repeats: usize,
}

/// Runs the three kernels and reports the best repeat of each.
pub fn measure(cfg: StreamConfig) -> Result<StreamResult, BenchError> {
    let n = cfg.total_bytes / 3 / size_of::<f64>();
    if cfg.threads == 0 || cfg.repeats == 0 {
        return Err(BenchError::Plan(format!(
            "STREAM needs at least one thread and one repeat (got {} threads, {} repeats)",
            cfg.threads, cfg.repeats
        )));
    }
    if n < cfg.threads {
        return Err(BenchError::Plan(format!(
            "STREAM arrays of {} bytes in total are too small for {} threads",
            cfg.total_bytes, cfg.threads
        )));
    }
    let chunk = n.div_ceil(cfg.threads);
    let (mut a, mut b, mut c) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);

    let init = zip3(a.chunks_mut(chunk), b.chunks_mut(chunk), c.chunks_mut(chunk));
    best_seconds(init, 1, |(a, b, c)| {
        a.fill(1.0);
        b.fill(2.0);
        c.fill(0.5);
    });

    let read = best_seconds(a.chunks(chunk).collect(), cfg.repeats, |a| {
        black_box(sum(black_box(a)));
    });
    let copy = best_seconds(
        a.chunks(chunk).zip(c.chunks_mut(chunk)).collect(),
        cfg.repeats,
        |(a, c)| {
            c.copy_from_slice(a);
            black_box(c);
        },
    );
    let q = black_box(3.0f64);
    let triad = zip3(a.chunks_mut(chunk), b.chunks(chunk), c.chunks(chunk));
    let triad = best_seconds(triad, cfg.repeats, |(a, b, c)| {
        for ((x, y), z) in a.iter_mut().zip(b.iter()).zip(c.iter()) {
            *x = y + q * z;
        }
        black_box(a);
    });

    let bytes = (n * size_of::<f64>()) as f64;
    Ok(StreamResult {
        read_gb_s: bytes / read / 1e9,
        copy_gb_s: 2.0 * bytes / copy / 1e9,
        triad_gb_s: 3.0 * bytes / triad / 1e9,
        array_bytes: bytes as u64,
        threads: cfg.threads,
        repeats: cfg.repeats,
    })
}

fn zip3<A, B, C>(a: impl Iterator<Item = A>, b: impl Iterator<Item = B>, c: impl Iterator<Item = C>) -> Vec<(A, B, C)> {
    a.zip(b).zip(c).map(|((a, b), c)| (a, b, c)).collect()
}

/// Sum with 8 independent accumulators, so the additions vectorise and
/// pipeline instead of forming one serial dependency chain.
fn sum(a: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = a.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().sum();
    for block in chunks {
        for (s, x) in acc.iter_mut().zip(block) {
            *s += x;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Runs `kernel` on every part, one scoped thread per part, `repeats` times,
/// and returns the fastest repeat in seconds. Threads start each repeat
/// together (a barrier) and time themselves; a repeat lasts from the earliest
/// start to the latest end. (Timing from a coordinating thread instead would
/// be wrong on a busy machine: if it is scheduled late, the work it means to
/// time may already be done.)
pub(crate) fn best_seconds<T: Send>(parts: Vec<T>, repeats: usize, kernel: impl Fn(&mut T) + Sync) -> f64 {
    let barrier = Barrier::new(parts.len());
    let spans: Vec<Vec<(Instant, Instant)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|mut part| {
                let (barrier, kernel) = (&barrier, &kernel);
                scope.spawn(move || {
                    (0..repeats)
                        .map(|_| {
                            barrier.wait();
                            let start = Instant::now();
                            kernel(&mut part);
                            (start, Instant::now())
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    (0..repeats)
        .filter_map(|r| {
            let start = spans.iter().map(|s| s[r].0).min()?;
            let end = spans.iter().map(|s| s[r].1).max()?;
            Some((end - start).as_secs_f64())
        })
        .fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_covers_blocks_and_tail() {
        let a: Vec<f64> = (1..=21).map(f64::from).collect();
        assert_eq!(sum(&a), 231.0);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn refuses_empty_plans() {
        let small = StreamConfig {
            total_bytes: 16,
            threads: 2,
            repeats: 1,
        };
        let err = measure(small).unwrap_err().to_string();
        assert!(err.contains("too small for 2 threads"), "{err}");
        let err = measure(StreamConfig { repeats: 0, ..small }).unwrap_err().to_string();
        assert!(err.contains("0 repeats"), "{err}");
    }
}
